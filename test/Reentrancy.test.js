// Every function that moves tokens is guarded: a token that calls back into the contract during a transfer
// (what a malicious or hooked token could do) makes the whole transaction revert.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

async function evilFixture() {
  const [owner, node, buyer, funder] = await ethers.getSigners();
  const token = await ethers.deployContract("ReentrantToken");
  const pool = await ethers.deployContract("RewardPool", [token, h.EPOCH_LENGTH, owner.address]);
  const staking = await ethers.deployContract("NodeStaking", [token, pool, 1, 0, owner.address]);
  const escrow = await ethers.deployContract("PaymentEscrow", [token, staking, pool, 500, 0, owner.address]);
  await staking.setReceiptVerifier(escrow);
  await pool.setEscrow(escrow);
  for (const s of [node, buyer, funder]) {
    await token.mint(s.address, 10n ** 24n);
    for (const c of [staking, escrow, pool]) await token.connect(s).approve(c, ethers.MaxUint256);
  }
  return { token, pool, staking, escrow, owner, node, buyer, funder };
}

/** The call reverts because the guarded contract refused the token's re-entry. */
function refused(txPromise, contract) {
  return expect(txPromise).to.be.revertedWithCustomError(contract, "ReentrancyGuardReentrantCall");
}

describe("Reentrancy", function () {
  it("PaymentEscrow.withdraw cannot be re-entered", async function () {
    const { token, escrow, buyer } = await loadFixture(evilFixture);
    await escrow.connect(buyer).deposit(100n);
    await escrow.connect(buyer).requestWithdrawal(100n);
    await token.arm(escrow, escrow.interface.encodeFunctionData("withdraw"));
    await refused(escrow.connect(buyer).withdraw(), escrow);
    expect(await escrow.balanceOf(buyer)).to.equal(100n);
  });

  it("PaymentEscrow.claimEarnings cannot be re-entered", async function () {
    const { token, escrow, staking, node, buyer } = await loadFixture(evilFixture);
    await staking.connect(node).register(ethers.ZeroHash);
    await escrow.connect(buyer).deposit(10n ** 21n);
    const s = await h.signedReceipt(escrow, node, buyer);
    await escrow.settle(s.r, s.nodeSig, s.buyerSig);
    await token.arm(escrow, escrow.interface.encodeFunctionData("claimEarnings"));
    await refused(escrow.connect(node).claimEarnings(), escrow);
  });

  it("PaymentEscrow.settle cannot be re-entered through the fee transfer", async function () {
    const { token, escrow, staking, node, buyer } = await loadFixture(evilFixture);
    await staking.connect(node).register(ethers.ZeroHash);
    await escrow.connect(buyer).deposit(10n ** 21n);
    const s = await h.signedReceipt(escrow, node, buyer);
    const again = await h.signedReceipt(escrow, node, buyer);
    await token.arm(escrow, escrow.interface.encodeFunctionData("settle", [again.r, again.nodeSig, again.buyerSig]));
    await refused(escrow.settle(s.r, s.nodeSig, s.buyerSig), escrow);
  });

  it("NodeStaking.withdraw cannot be re-entered", async function () {
    const { token, staking, node } = await loadFixture(evilFixture);
    await staking.connect(node).register(ethers.ZeroHash);
    await staking.connect(node).stake(100n);
    await staking.connect(node).requestUnbond(100n);
    await token.arm(staking, staking.interface.encodeFunctionData("withdraw"));
    await refused(staking.connect(node).withdraw(), staking);
    expect((await staking.nodes(node)).unbonding).to.equal(100n);
  });

  it("RewardPool.claim cannot be re-entered", async function () {
    const { token, pool, escrow, staking, node, buyer } = await loadFixture(evilFixture);
    await staking.connect(node).register(ethers.ZeroHash);
    await staking.connect(node).stake(100n);
    await escrow.connect(buyer).deposit(10n ** 21n);
    const s = await h.signedReceipt(escrow, node, buyer);
    await escrow.settle(s.r, s.nodeSig, s.buyerSig);
    await time.increase(h.EPOCH_LENGTH);
    await token.arm(pool, pool.interface.encodeFunctionData("claim", [[0]]));
    await refused(pool.connect(node).claim([0]), pool);
    expect(await pool.claimed(0, node)).to.equal(false);
  });

  describe("every other token-moving entry point", function () {
    async function armedCall(f, contract, fn, args, from) {
      await f.token.arm(contract, contract.interface.encodeFunctionData(fn, args));
      return contract.connect(from)[fn](...args);
    }

    it("NodeStaking.stake", async function () {
      const f = await loadFixture(evilFixture);
      await f.staking.connect(f.node).register(ethers.ZeroHash);
      await refused(armedCall(f, f.staking, "stake", [5n], f.node), f.staking);
    });

    it("PaymentEscrow.deposit and depositFor", async function () {
      const f = await loadFixture(evilFixture);
      await refused(armedCall(f, f.escrow, "deposit", [5n], f.buyer), f.escrow);
      await refused(armedCall(f, f.escrow, "depositFor", [f.node.address, 5n], f.buyer), f.escrow);
    });

    it("RewardPool.fund", async function () {
      const f = await loadFixture(evilFixture);
      await refused(armedCall(f, f.pool, "fund", [5n], f.funder), f.pool);
    });

    it("PaymentEscrow.settleBatch", async function () {
      const f = await loadFixture(evilFixture);
      await f.escrow.connect(f.buyer).deposit(10n ** 21n);
      const s = await h.signedReceipt(f.escrow, f.node, f.buyer);
      const args = [[s.r], [s.nodeSig], [s.buyerSig]];
      await refused(armedCall(f, f.escrow, "settleBatch", args, f.funder), f.escrow);
    });

    it("NodeStaking.reportEquivocation and slashByVerdicts (reporter payout)", async function () {
      const f = await loadFixture(evilFixture);
      const [, , , , v1] = await ethers.getSigners();
      await f.staking.connect(f.node).register(ethers.ZeroHash);
      await f.staking.connect(f.node).stake(1000n);
      await f.staking.addValidator(v1.address);
      await f.staking.setQuorum(1);
      const a = await h.makeReceipt({ node: f.node.address, buyer: f.buyer.address });
      const b = { ...a, tokensIn: a.tokensIn + 1n };
      const args = [a, await h.signReceipt(f.node, f.escrow, a), b, await h.signReceipt(f.node, f.escrow, b)];
      await refused(armedCall(f, f.staking, "reportEquivocation", args, f.funder), f.staking);
      const v = {
        node: f.node.address,
        sessionId: a.sessionId,
        guilty: true,
        evidenceHash: ethers.ZeroHash,
        deadline: BigInt(await time.latest()) + 600n,
      };
      const vargs = [v, [await h.signVerdict(v1, f.staking, v)]];
      await refused(armedCall(f, f.staking, "slashByVerdicts", vargs, f.funder), f.staking);
      expect((await f.staking.nodes(f.node)).stake).to.equal(1000n);
    });
  });
});
