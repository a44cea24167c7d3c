const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

/** A pool whose "escrow" is a plain account, to drive recordContribution directly. */
async function poolFixture() {
  const [owner, escrowEOA, nodeA, nodeB, funder, other] = await ethers.getSigners();
  const token = await ethers.deployContract("InferToken", [owner.address]);
  const pool = await ethers.deployContract("RewardPool", [token, h.EPOCH_LENGTH, owner.address]);
  await pool.setEscrow(escrowEOA.address);
  await token.mint(funder.address, 1_000_000n * h.E18);
  await token.connect(funder).approve(pool, ethers.MaxUint256);
  return { token, pool, owner, escrowEOA, nodeA, nodeB, funder, other };
}

async function nextEpoch() {
  await time.increase(h.EPOCH_LENGTH);
}

describe("RewardPool", function () {
  describe("constructor", function () {
    it("starts epoch 0 at deployment", async function () {
      const { pool, token } = await loadFixture(poolFixture);
      expect(await pool.token()).to.equal(await token.getAddress());
      expect(await pool.epochLength()).to.equal(h.EPOCH_LENGTH);
      expect(await pool.currentEpoch()).to.equal(0n);
      await nextEpoch();
      expect(await pool.currentEpoch()).to.equal(1n);
    });

    it("rejects a zero token and a zero epoch length", async function () {
      const { token, owner } = await loadFixture(poolFixture);
      const F = await ethers.getContractFactory("RewardPool");
      await expect(F.deploy(ethers.ZeroAddress, 1, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
      await expect(F.deploy(token, 0, owner)).to.be.revertedWithCustomError(F, "ZeroEpochLength");
    });
  });

  describe("setEscrow", function () {
    it("sets the escrow, owner only, never zero", async function () {
      const { pool, escrowEOA, other } = await loadFixture(poolFixture);
      await expect(pool.setEscrow(other.address)).to.emit(pool, "EscrowChanged").withArgs(escrowEOA.address, other.address);
      expect(await pool.escrow()).to.equal(other.address);
      await expect(pool.setEscrow(ethers.ZeroAddress)).to.be.revertedWithCustomError(pool, "ZeroAddress");
      await expect(pool.connect(other).setEscrow(other.address)).to.be.revertedWithCustomError(
        pool,
        "OwnableUnauthorizedAccount",
      );
    });
  });

  describe("fund", function () {
    it("pulls tokens into the current epoch's reward", async function () {
      const { pool, token, funder } = await loadFixture(poolFixture);
      const tx = pool.connect(funder).fund(10n);
      await expect(tx).to.emit(pool, "RewardFunded").withArgs(0, funder.address, 10n);
      await expect(tx).to.changeTokenBalances(token, [funder, pool], [-10n, 10n]);
      expect(await pool.epochReward(0)).to.equal(10n);
      await expect(pool.connect(funder).fund(0)).to.be.revertedWithCustomError(pool, "ZeroAmount");
    });
  });

  describe("recordContribution", function () {
    it("is escrow only and adds to the node and the epoch totals", async function () {
      const { pool, escrowEOA, nodeA, other } = await loadFixture(poolFixture);
      await expect(pool.connect(escrowEOA).recordContribution(nodeA.address, 5n))
        .to.emit(pool, "ContributionRecorded")
        .withArgs(0, nodeA.address, 5n);
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 2n);
      expect(await pool.contributionOf(0, nodeA)).to.equal(7n);
      expect(await pool.totalContribution(0)).to.equal(7n);
      await expect(pool.connect(other).recordContribution(nodeA.address, 1n))
        .to.be.revertedWithCustomError(pool, "NotEscrow")
        .withArgs(other.address);
      await expect(pool.connect(escrowEOA).recordContribution(nodeA.address, 0n)).to.be.revertedWithCustomError(
        pool,
        "ZeroAmount",
      );
    });
  });

  describe("claim / claimable", function () {
    it("shares an ended epoch's reward in proportion to contribution", async function () {
      const { pool, token, escrowEOA, nodeA, nodeB, funder } = await loadFixture(poolFixture);
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 300n);
      await pool.connect(escrowEOA).recordContribution(nodeB.address, 100n);
      await pool.connect(funder).fund(1000n);
      expect(await pool.claimable(0, nodeA)).to.equal(0n); // not ended
      await expect(pool.connect(nodeA).claim([0])).to.be.revertedWithCustomError(pool, "EpochNotEnded").withArgs(0);
      await nextEpoch();
      expect(await pool.claimable(0, nodeA)).to.equal(750n);
      expect(await pool.claimable(0, nodeB)).to.equal(250n);
      const tx = pool.connect(nodeA).claim([0]);
      await expect(tx).to.emit(pool, "RewardClaimed").withArgs(0, nodeA.address, 750n);
      await expect(tx).to.changeTokenBalances(token, [nodeA, pool], [750n, -750n]);
      expect(await pool.claimable(0, nodeA)).to.equal(0n); // claimed
      await expect(pool.connect(nodeA).claim([0])).to.be.revertedWithCustomError(pool, "AlreadyClaimed").withArgs(0);
      await expect(pool.connect(nodeB).claim([0])).to.emit(pool, "RewardClaimed").withArgs(0, nodeB.address, 250n);
    });

    it("claims several epochs at once and skips epochs without contribution", async function () {
      const { pool, token, escrowEOA, nodeA, nodeB, funder } = await loadFixture(poolFixture);
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 1n);
      await pool.connect(funder).fund(100n);
      await nextEpoch();
      await pool.connect(escrowEOA).recordContribution(nodeB.address, 1n); // nodeA absent in epoch 1
      await pool.connect(funder).fund(50n);
      await nextEpoch();
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 1n);
      await pool.connect(escrowEOA).recordContribution(nodeB.address, 1n);
      await pool.connect(funder).fund(40n);
      await nextEpoch();
      await expect(pool.connect(nodeA).claim([0, 1, 2])).to.changeTokenBalance(token, nodeA, 120n);
      expect(await pool.claimed(1, nodeA)).to.equal(false);
    });

    it("has nothing to claim without contribution or without reward", async function () {
      const { pool, escrowEOA, nodeA, other } = await loadFixture(poolFixture);
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 10n);
      await nextEpoch();
      expect(await pool.claimable(0, other)).to.equal(0n);
      await expect(pool.connect(other).claim([0])).to.be.revertedWithCustomError(pool, "NothingToClaim");
      await expect(pool.connect(nodeA).claim([0])).to.be.revertedWithCustomError(pool, "NothingToClaim");
      await expect(pool.connect(nodeA).claim([])).to.be.revertedWithCustomError(pool, "NothingToClaim");
      expect(await pool.claimable(1, nodeA)).to.equal(0n);
    });

    it("returns zero claimable for an ended epoch with no contribution at all", async function () {
      const { pool, funder, nodeA } = await loadFixture(poolFixture);
      await pool.connect(funder).fund(10n);
      await nextEpoch();
      expect(await pool.claimable(0, nodeA)).to.equal(0n);
    });
  });

  describe("rollOver", function () {
    it("moves an ended epoch's reward without contribution into the current epoch", async function () {
      const { pool, funder, other } = await loadFixture(poolFixture);
      await pool.connect(funder).fund(10n);
      await expect(pool.connect(other).rollOver(0)).to.be.revertedWithCustomError(pool, "EpochNotEnded").withArgs(0);
      await nextEpoch();
      await nextEpoch();
      await expect(pool.connect(other).rollOver(0)).to.emit(pool, "RewardRolledOver").withArgs(0, 2, 10n);
      expect(await pool.epochReward(0)).to.equal(0n);
      expect(await pool.epochReward(2)).to.equal(10n);
      await expect(pool.rollOver(0)).to.be.revertedWithCustomError(pool, "NothingToRollOver").withArgs(0);
    });

    it("refuses epochs that have contribution", async function () {
      const { pool, funder, escrowEOA, nodeA } = await loadFixture(poolFixture);
      await pool.connect(funder).fund(10n);
      await pool.connect(escrowEOA).recordContribution(nodeA.address, 1n);
      await nextEpoch();
      await expect(pool.rollOver(0)).to.be.revertedWithCustomError(pool, "NothingToRollOver").withArgs(0);
    });
  });

  describe("end to end with the escrow", function () {
    it("pays the fees of settled receipts back to the nodes that earned them", async function () {
      const { escrow, pool, token, nodeA, nodeB, buyer } = await loadFixture(h.marketFixture);
      const a = await h.signedReceipt(escrow, nodeA, buyer, { tokensIn: 300n, tokensOut: 0n });
      const b = await h.signedReceipt(escrow, nodeB, buyer, { tokensIn: 100n, tokensOut: 0n });
      await escrow.settleBatch([a.r, b.r], [a.nodeSig, b.nodeSig], [a.buyerSig, b.buyerSig]);
      const fees = await pool.epochReward(0);
      expect(fees).to.equal(((h.owed(a.r) + h.owed(b.r)) * h.FEE_BPS) / 10000n);
      await time.increase(h.EPOCH_LENGTH);
      await expect(pool.connect(nodeA).claim([0])).to.changeTokenBalance(token, nodeA, (fees * 3n) / 4n);
      await expect(pool.connect(nodeB).claim([0])).to.changeTokenBalance(token, nodeB, fees / 4n);
    });
  });
});
