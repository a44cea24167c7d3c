// Shared fixtures for the contract tests: a full deployment wired like `inferchain devnet up` does it, and
// EIP-712 signing of receipts and verdicts exactly as the Python side does it (inferchain/wallet).
const { ethers } = require("hardhat");
const { time } = require("@nomicfoundation/hardhat-network-helpers");

const E18 = 10n ** 18n;
const MIN_STAKE = 1000n * E18;
const UNBONDING_DELAY = 7n * 24n * 3600n;
const WITHDRAW_DELAY = 24n * 3600n;
const EPOCH_LENGTH = 24n * 3600n;
const FEE_BPS = 500n;

const RECEIPT_TYPES = {
  Receipt: [
    { name: "sessionId", type: "bytes32" },
    { name: "buyer", type: "address" },
    { name: "node", type: "address" },
    { name: "modelId", type: "bytes32" },
    { name: "spanStart", type: "uint32" },
    { name: "spanEnd", type: "uint32" },
    { name: "tokensIn", type: "uint64" },
    { name: "tokensOut", type: "uint64" },
    { name: "pricePer1k", type: "uint256" },
    { name: "activationCommitment", type: "bytes32" },
    { name: "expiry", type: "uint64" },
  ],
};

const VERDICT_TYPES = {
  Verdict: [
    { name: "node", type: "address" },
    { name: "sessionId", type: "bytes32" },
    { name: "guilty", type: "bool" },
    { name: "evidenceHash", type: "bytes32" },
    { name: "deadline", type: "uint64" },
  ],
};

async function domainOf(contract, chainId) {
  const network = await ethers.provider.getNetwork();
  return {
    name: "inferchain",
    version: "1",
    chainId: chainId ?? network.chainId,
    verifyingContract: await contract.getAddress(),
  };
}

let sessionCounter = 0;

/** A receipt with sensible defaults; `over` replaces fields. */
async function makeReceipt(over = {}) {
  sessionCounter += 1;
  const now = BigInt(await time.latest());
  return {
    sessionId: ethers.zeroPadValue(ethers.toBeHex(sessionCounter), 32),
    buyer: ethers.ZeroAddress,
    node: ethers.ZeroAddress,
    modelId: ethers.id("SmolLM2-135M-Instruct"),
    spanStart: 0,
    spanEnd: 10,
    tokensIn: 100n,
    tokensOut: 28n,
    pricePer1k: E18 / 100n, // 0.01 INFER per 1k tokens per layer
    activationCommitment: ethers.id("activations"),
    expiry: now + 3600n,
    ...over,
  };
}

function owed(r) {
  return ((BigInt(r.tokensIn) + BigInt(r.tokensOut)) * BigInt(r.spanEnd - r.spanStart) * BigInt(r.pricePer1k)) / 1000n;
}

function contributionOf(r) {
  return (BigInt(r.tokensIn) + BigInt(r.tokensOut)) * BigInt(r.spanEnd - r.spanStart);
}

function receiptKey(r) {
  return ethers.keccak256(
    ethers.AbiCoder.defaultAbiCoder().encode(
      ["bytes32", "address", "uint32", "uint32"],
      [r.sessionId, r.node, r.spanStart, r.spanEnd],
    ),
  );
}

async function signReceipt(signer, escrow, r, chainId) {
  return signer.signTypedData(await domainOf(escrow, chainId), RECEIPT_TYPES, r);
}

async function signVerdict(signer, staking, v) {
  return signer.signTypedData(await domainOf(staking), VERDICT_TYPES, v);
}

/** Receipt signed by `node` and countersigned by `buyer`. */
async function signedReceipt(escrow, node, buyer, over = {}) {
  const r = await makeReceipt({ node: node.address, buyer: buyer.address, ...over });
  return { r, nodeSig: await signReceipt(node, escrow, r), buyerSig: await signReceipt(buyer, escrow, r) };
}

async function deployFixture() {
  const signers = await ethers.getSigners();
  const [owner, nodeA, nodeB, buyer, buyer2, reporter, v1, v2, v3, other] = signers;
  const token = await ethers.deployContract("InferToken", [owner.address]);
  const pool = await ethers.deployContract("RewardPool", [token, EPOCH_LENGTH, owner.address]);
  const staking = await ethers.deployContract("NodeStaking", [token, pool, MIN_STAKE, UNBONDING_DELAY, owner.address]);
  const escrow = await ethers.deployContract("PaymentEscrow", [token, staking, pool, FEE_BPS, WITHDRAW_DELAY, owner.address]);
  await staking.setReceiptVerifier(escrow);
  await pool.setEscrow(escrow);

  for (const s of [nodeA, nodeB, buyer, buyer2, reporter, other]) {
    await token.mint(s.address, 1_000_000n * E18);
    await token.connect(s).approve(staking, ethers.MaxUint256);
    await token.connect(s).approve(escrow, ethers.MaxUint256);
    await token.connect(s).approve(pool, ethers.MaxUint256);
  }
  await token.approve(escrow, ethers.MaxUint256);
  await token.approve(pool, ethers.MaxUint256);
  return { token, pool, staking, escrow, owner, nodeA, nodeB, buyer, buyer2, reporter, v1, v2, v3, other, signers };
}

/** deployFixture plus two staked, routable nodes and two funded buyers. */
async function marketFixture() {
  const f = await deployFixture();
  for (const n of [f.nodeA, f.nodeB]) {
    await f.staking.connect(n).register(ethers.id(`meta:${n.address}`));
    await f.staking.connect(n).stake(MIN_STAKE * 2n);
  }
  await f.escrow.connect(f.buyer).deposit(1000n * E18);
  await f.escrow.connect(f.buyer2).deposit(1000n * E18);
  return f;
}

module.exports = {
  E18,
  MIN_STAKE,
  UNBONDING_DELAY,
  WITHDRAW_DELAY,
  EPOCH_LENGTH,
  FEE_BPS,
  RECEIPT_TYPES,
  VERDICT_TYPES,
  domainOf,
  makeReceipt,
  owed,
  contributionOf,
  receiptKey,
  signReceipt,
  signVerdict,
  signedReceipt,
  deployFixture,
  marketFixture,
};
