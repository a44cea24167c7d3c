// Gas figures of the hot paths (settle single, batch of 50, stake, slash), printed as a table.
// Gas is deterministic, so the settlement target is asserted: <= 60k gas per receipt in a batch of 50.
const { expect } = require("chai");
const hre = require("hardhat");
const { ethers } = hre;
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

const BATCH = 50;
const TARGET_PER_RECEIPT = 60_000n;
// solidity-coverage instruments the bytecode, which inflates gas: the figures only mean something without it.
const INSTRUMENTED = Boolean(hre.__SOLIDITY_COVERAGE_RUNNING);

function expectWithinTarget(total) {
  if (!INSTRUMENTED) expect(total / BigInt(BATCH)).to.be.lte(TARGET_PER_RECEIPT);
}

async function gasOf(txPromise) {
  const tx = await txPromise;
  return (await tx.wait()).gasUsed;
}

/** `count` fresh wallets with ETH for gas, INFER, and approvals to every contract. */
async function wallets(f, count) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const w = ethers.Wallet.createRandom().connect(ethers.provider);
    await f.owner.sendTransaction({ to: w.address, value: ethers.parseEther("1") });
    await f.token.mint(w.address, 100_000n * h.E18);
    await f.token.connect(w).approve(f.staking, ethers.MaxUint256);
    await f.token.connect(w).approve(f.escrow, ethers.MaxUint256);
    out.push(w);
  }
  return out;
}

async function stakeAll(f, nodes) {
  for (const n of nodes) {
    await f.staking.connect(n).register(ethers.ZeroHash);
    await f.staking.connect(n).stake(h.MIN_STAKE);
  }
}

async function batchOf(escrow, pairs) {
  const items = [];
  for (const [node, buyer] of pairs) items.push(await h.signedReceipt(escrow, node, buyer));
  return [items.map((s) => s.r), items.map((s) => s.nodeSig), items.map((s) => s.buyerSig)];
}

async function gasFixture() {
  const f = await h.marketFixture();
  f.buyers = await wallets(f, BATCH);
  for (const b of f.buyers) await f.escrow.connect(b).deposit(1000n * h.E18);
  f.nodes = await wallets(f, BATCH);
  await stakeAll(f, f.nodes);
  for (const v of [f.v1, f.v2, f.v3]) await f.staking.addValidator(v.address);
  await f.staking.setQuorum(2);
  // warm the per-epoch counters the way a running market has them
  const warm = await h.signedReceipt(f.escrow, f.nodeB, f.buyer2);
  await f.escrow.settle(warm.r, warm.nodeSig, warm.buyerSig);
  return f;
}

describe("Gas", function () {
  const rows = [];
  after(function () {
    if (INSTRUMENTED) console.log("\n  (coverage run: instrumented bytecode, gas figures inflated)");
    console.log("\n  Gas figures (hardhat network, solc 0.8.28, optimizer 200 runs, cancun):");
    console.log("  " + "operation".padEnd(62) + "gas total".padStart(12) + "per receipt".padStart(14));
    for (const [name, total, per] of rows) {
      console.log("  " + name.padEnd(62) + String(total).padStart(12) + (per ? String(per) : "").padStart(14));
    }
    console.log("");
  });

  it("settle: one receipt", async function () {
    const f = await loadFixture(gasFixture);
    const first = await h.signedReceipt(f.escrow, f.nodeA, f.buyer);
    const g1 = await gasOf(f.escrow.settle(first.r, first.nodeSig, first.buyerSig));
    rows.push(["settle (node's first receipt this epoch)", g1, g1]);
    const second = await h.signedReceipt(f.escrow, f.nodeA, f.buyer);
    const g2 = await gasOf(f.escrow.settle(second.r, second.nodeSig, second.buyerSig));
    rows.push(["settle (steady state)", g2, g2]);
    expect(g2).to.be.lessThan(g1);
  });

  it("settleBatch: 50 receipts, one node, one buyer", async function () {
    const f = await loadFixture(gasFixture);
    const batch = await batchOf(f.escrow, Array.from({ length: BATCH }, () => [f.nodeA, f.buyer]));
    const g = await gasOf(f.escrow.settleBatch(...batch));
    rows.push([`settleBatch x${BATCH}: 1 node, 1 buyer`, g, g / BigInt(BATCH)]);
    expectWithinTarget(g);
  });

  it("settleBatch: 50 receipts, one node, 50 buyers", async function () {
    const f = await loadFixture(gasFixture);
    const batch = await batchOf(
      f.escrow,
      f.buyers.map((b) => [f.nodeA, b]),
    );
    const g = await gasOf(f.escrow.settleBatch(...batch));
    rows.push([`settleBatch x${BATCH}: 1 node, ${BATCH} buyers`, g, g / BigInt(BATCH)]);
    expectWithinTarget(g);
  });

  it("settleBatch: 50 receipts, 50 nodes, one buyer", async function () {
    const f = await loadFixture(gasFixture);
    const batch = await batchOf(
      f.escrow,
      f.nodes.map((n) => [n, f.buyer]),
    );
    const g = await gasOf(f.escrow.settleBatch(...batch));
    rows.push([`settleBatch x${BATCH}: ${BATCH} nodes, 1 buyer (worst: new contributors)`, g, g / BigInt(BATCH)]);
  });

  it("settleBatch: 50 receipts, 50 nodes, 50 buyers", async function () {
    const f = await loadFixture(gasFixture);
    const batch = await batchOf(
      f.escrow,
      f.nodes.map((n, i) => [n, f.buyers[i]]),
    );
    const g = await gasOf(f.escrow.settleBatch(...batch));
    rows.push([`settleBatch x${BATCH}: ${BATCH} nodes, ${BATCH} buyers (worst case)`, g, g / BigInt(BATCH)]);
  });

  it("stake, and slash by equivocation and by a 2-of-3 verdict quorum", async function () {
    const f = await loadFixture(gasFixture);
    rows.push(["register", await gasOf(f.staking.connect(f.other).register(ethers.ZeroHash))]);
    rows.push(["stake (first)", await gasOf(f.staking.connect(f.other).stake(h.MIN_STAKE))]);
    rows.push(["stake (top up)", await gasOf(f.staking.connect(f.other).stake(h.MIN_STAKE))]);

    const a = await h.makeReceipt({ node: f.nodeA.address, buyer: f.buyer.address });
    const b = { ...a, tokensOut: a.tokensOut + 1n };
    const g = await gasOf(
      f.staking
        .connect(f.reporter)
        .reportEquivocation(a, await h.signReceipt(f.nodeA, f.escrow, a), b, await h.signReceipt(f.nodeA, f.escrow, b)),
    );
    rows.push(["slash: reportEquivocation", g]);

    const v = {
      node: f.nodeB.address,
      sessionId: ethers.id("s"),
      guilty: true,
      evidenceHash: ethers.id("e"),
      deadline: BigInt(await time.latest()) + 600n,
    };
    const signers = [f.v1, f.v2].sort((x, y) => (BigInt(x.address) < BigInt(y.address) ? -1 : 1));
    const sigs = await Promise.all(signers.map((s) => h.signVerdict(s, f.staking, v)));
    rows.push(["slash: slashByVerdicts (2 of 3)", await gasOf(f.staking.connect(f.reporter).slashByVerdicts(v, sigs))]);
  });
});
