const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

/** Two different receipts for one session/span, both signed by `node`. */
async function conflictingPair(escrow, node, buyer, over = {}) {
  const a = await h.makeReceipt({ node: node.address, buyer: buyer.address, ...over });
  const b = { ...a, tokensOut: a.tokensOut + 50n };
  return {
    a,
    b,
    sigA: await h.signReceipt(node, escrow, a),
    sigB: await h.signReceipt(node, escrow, b),
  };
}

async function verdictFor(node, over = {}) {
  return {
    node: node.address,
    sessionId: ethers.id("session-1"),
    guilty: true,
    evidenceHash: ethers.id("evidence"),
    deadline: BigInt(await time.latest()) + 3600n,
    ...over,
  };
}

/** Signatures by `signers` of `v`, ordered by ascending signer address as the contract requires. */
async function quorumSigs(staking, signers, v) {
  const sorted = [...signers].sort((x, y) => (BigInt(x.address) < BigInt(y.address) ? -1 : 1));
  return Promise.all(sorted.map((s) => h.signVerdict(s, staking, v)));
}

async function validatorsFixture() {
  const f = await h.marketFixture();
  for (const v of [f.v1, f.v2, f.v3]) await f.staking.addValidator(v.address);
  await f.staking.setQuorum(2);
  return f;
}

describe("NodeStaking", function () {
  describe("constructor", function () {
    it("stores parameters and defaults", async function () {
      const { staking, token, pool, owner } = await loadFixture(h.deployFixture);
      expect(await staking.token()).to.equal(await token.getAddress());
      expect(await staking.rewardPool()).to.equal(await pool.getAddress());
      expect(await staking.minStake()).to.equal(h.MIN_STAKE);
      expect(await staking.unbondingDelay()).to.equal(h.UNBONDING_DELAY);
      expect(await staking.slashBps()).to.equal(5000n);
      expect(await staking.reporterShareBps()).to.equal(5000n);
      expect(await staking.jailDuration()).to.equal(7n * 24n * 3600n);
      expect(await staking.owner()).to.equal(owner.address);
      expect(await staking.quorum()).to.equal(0n);
    });

    it("rejects zero addresses", async function () {
      const { token, pool, owner } = await loadFixture(h.deployFixture);
      const F = await ethers.getContractFactory("NodeStaking");
      await expect(F.deploy(ethers.ZeroAddress, pool, 1, 1, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
      await expect(F.deploy(token, ethers.ZeroAddress, 1, 1, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
    });
  });

  describe("register / updateMetadata", function () {
    it("registers once and updates metadata", async function () {
      const { staking, nodeA } = await loadFixture(h.deployFixture);
      const m1 = ethers.id("m1");
      const m2 = ethers.id("m2");
      await expect(staking.connect(nodeA).register(m1)).to.emit(staking, "NodeRegistered").withArgs(nodeA.address, m1);
      await expect(staking.connect(nodeA).register(m1))
        .to.be.revertedWithCustomError(staking, "AlreadyRegistered")
        .withArgs(nodeA.address);
      await expect(staking.connect(nodeA).updateMetadata(m2)).to.emit(staking, "MetadataUpdated").withArgs(nodeA.address, m2);
      const n = await staking.nodes(nodeA);
      expect(n.registered).to.equal(true);
      expect(n.metadataHash).to.equal(m2);
    });

    it("refuses metadata updates from unregistered accounts", async function () {
      const { staking, other } = await loadFixture(h.deployFixture);
      await expect(staking.connect(other).updateMetadata(ethers.ZeroHash))
        .to.be.revertedWithCustomError(staking, "NotRegistered")
        .withArgs(other.address);
    });
  });

  describe("stake / isRoutable", function () {
    it("stakes, pulls tokens, and becomes routable at the minimum", async function () {
      const { staking, token, nodeA } = await loadFixture(h.deployFixture);
      await staking.connect(nodeA).register(ethers.ZeroHash);
      expect(await staking.isRoutable(nodeA)).to.equal(false);
      const tx = staking.connect(nodeA).stake(h.MIN_STAKE - 1n);
      await expect(tx).to.emit(staking, "Staked").withArgs(nodeA.address, h.MIN_STAKE - 1n, h.MIN_STAKE - 1n);
      await expect(tx).to.changeTokenBalances(token, [nodeA, staking], [-(h.MIN_STAKE - 1n), h.MIN_STAKE - 1n]);
      expect(await staking.isRoutable(nodeA)).to.equal(false);
      await staking.connect(nodeA).stake(1n);
      expect(await staking.isRoutable(nodeA)).to.equal(true);
      expect((await staking.nodes(nodeA)).stake).to.equal(h.MIN_STAKE);
    });

    it("refuses zero and unregistered stakers", async function () {
      const { staking, nodeA, other } = await loadFixture(h.deployFixture);
      await staking.connect(nodeA).register(ethers.ZeroHash);
      await expect(staking.connect(nodeA).stake(0)).to.be.revertedWithCustomError(staking, "ZeroAmount");
      await expect(staking.connect(other).stake(1)).to.be.revertedWithCustomError(staking, "NotRegistered");
    });

    it("is not routable when unregistered", async function () {
      const { staking, other } = await loadFixture(h.deployFixture);
      expect(await staking.isRoutable(other)).to.equal(false);
    });
  });

  describe("requestUnbond / withdraw", function () {
    it("unbonds, refuses withdrawal during unbonding, then pays out", async function () {
      const { staking, token, nodeA } = await loadFixture(h.marketFixture);
      const staked = (await staking.nodes(nodeA)).stake;
      const tx = staking.connect(nodeA).requestUnbond(staked);
      const readyAt = BigInt(await time.latest()) + 1n + h.UNBONDING_DELAY;
      await expect(tx).to.emit(staking, "UnbondRequested").withArgs(nodeA.address, staked, staked, readyAt);
      expect(await staking.isRoutable(nodeA)).to.equal(false);

      await expect(staking.connect(nodeA).withdraw())
        .to.be.revertedWithCustomError(staking, "UnbondingNotReady")
        .withArgs(readyAt);
      await time.increaseTo(readyAt);
      const tx2 = staking.connect(nodeA).withdraw();
      await expect(tx2).to.emit(staking, "Withdrawn").withArgs(nodeA.address, staked);
      await expect(tx2).to.changeTokenBalances(token, [nodeA, staking], [staked, -staked]);
      await expect(staking.connect(nodeA).withdraw()).to.be.revertedWithCustomError(staking, "NothingToWithdraw");
    });

    it("restarts the timer when more is unbonded", async function () {
      const { staking, nodeA } = await loadFixture(h.marketFixture);
      await staking.connect(nodeA).requestUnbond(1n);
      await time.increase(h.UNBONDING_DELAY - 10n);
      await staking.connect(nodeA).requestUnbond(2n);
      const n = await staking.nodes(nodeA);
      expect(n.unbonding).to.equal(3n);
      await time.increase(20n);
      await expect(staking.connect(nodeA).withdraw()).to.be.revertedWithCustomError(staking, "UnbondingNotReady");
    });

    it("refuses zero, more than the stake, and unregistered callers", async function () {
      const { staking, nodeA, other } = await loadFixture(h.marketFixture);
      const staked = (await staking.nodes(nodeA)).stake;
      await expect(staking.connect(nodeA).requestUnbond(0)).to.be.revertedWithCustomError(staking, "ZeroAmount");
      await expect(staking.connect(nodeA).requestUnbond(staked + 1n))
        .to.be.revertedWithCustomError(staking, "InsufficientStake")
        .withArgs(staked, staked + 1n);
      await expect(staking.connect(other).requestUnbond(1)).to.be.revertedWithCustomError(staking, "NotRegistered");
    });
  });

  describe("reportEquivocation", function () {
    it("slashes, pays the reporter, funds the pool and jails the node", async function () {
      const { staking, escrow, pool, token, nodeA, buyer, reporter } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      const bonded = (await staking.nodes(nodeA)).stake;
      const amount = bonded / 2n;
      const offence = await staking.equivocationOffence(nodeA.address, p.a.sessionId, p.a.spanStart, p.a.spanEnd);
      const tx = staking.connect(reporter).reportEquivocation(p.a, p.sigA, p.b, p.sigB);
      await expect(tx)
        .to.emit(staking, "Slashed")
        .withArgs(nodeA.address, offence, reporter.address, amount, amount / 2n, amount - amount / 2n);
      const until = BigInt(await time.latest()) + 7n * 24n * 3600n;
      await expect(tx).to.emit(staking, "Jailed").withArgs(nodeA.address, until);
      await expect(tx).to.emit(pool, "RewardFunded");
      await expect(tx).to.changeTokenBalances(
        token,
        [staking, reporter, pool],
        [-(amount / 2n + (amount - amount / 2n)), amount / 2n, amount - amount / 2n],
      );
      const n = await staking.nodes(nodeA);
      expect(n.stake).to.equal(bonded - amount);
      expect(n.slashed).to.equal(amount);
      expect(await staking.isJailed(nodeA)).to.equal(true);
      expect(await staking.isRoutable(nodeA)).to.equal(false);
      expect(await staking.offenceSlashed(offence)).to.equal(true);
    });

    it("refuses a double slash for the same offence", async function () {
      const { staking, escrow, nodeA, buyer, reporter } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      await staking.connect(reporter).reportEquivocation(p.a, p.sigA, p.b, p.sigB);
      const offence = await staking.equivocationOffence(nodeA.address, p.a.sessionId, p.a.spanStart, p.a.spanEnd);
      await expect(staking.connect(reporter).reportEquivocation(p.b, p.sigB, p.a, p.sigA))
        .to.be.revertedWithCustomError(staking, "AlreadySlashed")
        .withArgs(offence);
    });

    it("refuses receipts about different sessions, nodes or spans", async function () {
      const { staking, escrow, nodeA, nodeB, buyer } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      const variants = [
        { node: nodeB.address },
        { sessionId: ethers.id("other") },
        { spanStart: 1 },
        { spanEnd: 11 },
      ];
      for (const v of variants) {
        const b = { ...p.b, ...v };
        const sigB = await h.signReceipt(nodeA, escrow, b);
        await expect(staking.reportEquivocation(p.a, p.sigA, b, sigB)).to.be.revertedWithCustomError(
          staking,
          "ReceiptsNotComparable",
        );
      }
    });

    it("refuses identical receipts", async function () {
      const { staking, escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      await expect(staking.reportEquivocation(p.a, p.sigA, p.a, p.sigA)).to.be.revertedWithCustomError(
        staking,
        "ReceiptsDoNotConflict",
      );
    });

    it("refuses receipts not signed by the node", async function () {
      const { staking, escrow, nodeA, nodeB, buyer } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      const forgedA = await h.signReceipt(nodeB, escrow, p.a);
      const forgedB = await h.signReceipt(nodeB, escrow, p.b);
      await expect(staking.reportEquivocation(p.a, forgedA, p.b, p.sigB))
        .to.be.revertedWithCustomError(staking, "InvalidNodeSignature")
        .withArgs(nodeB.address);
      await expect(staking.reportEquivocation(p.a, p.sigA, p.b, forgedB))
        .to.be.revertedWithCustomError(staking, "InvalidNodeSignature")
        .withArgs(nodeB.address);
      // a buyer-domain signature for another chain does not count either
      const otherChain = await h.signReceipt(nodeA, escrow, p.b, 1n);
      await expect(staking.reportEquivocation(p.a, p.sigA, p.b, otherChain)).to.be.revertedWithCustomError(
        staking,
        "InvalidNodeSignature",
      );
    });

    it("refuses malformed signatures for a zero node", async function () {
      const { staking, escrow, buyer } = await loadFixture(h.marketFixture);
      const a = await h.makeReceipt({ node: ethers.ZeroAddress, buyer: buyer.address });
      const b = { ...a, tokensOut: a.tokensOut + 1n };
      await expect(staking.reportEquivocation(a, "0x", b, "0x"))
        .to.be.revertedWithCustomError(staking, "InvalidNodeSignature")
        .withArgs(ethers.ZeroAddress);
      const sigA = await h.signReceipt(buyer, escrow, a);
      await expect(staking.reportEquivocation(a, sigA, b, "0x"))
        .to.be.revertedWithCustomError(staking, "InvalidNodeSignature")
        .withArgs(buyer.address);
    });

    it("refuses a malformed second signature after a valid first one", async function () {
      const { staking, escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, nodeA, buyer);
      await expect(staking.reportEquivocation(p.a, p.sigA, p.b, "0x"))
        .to.be.revertedWithCustomError(staking, "InvalidNodeSignature")
        .withArgs(ethers.ZeroAddress);
    });

    it("refuses to slash an unregistered signer", async function () {
      const { staking, escrow, other, buyer } = await loadFixture(h.marketFixture);
      const p = await conflictingPair(escrow, other, buyer);
      await expect(staking.reportEquivocation(p.a, p.sigA, p.b, p.sigB))
        .to.be.revertedWithCustomError(staking, "NotRegistered")
        .withArgs(other.address);
    });

    it("needs the receipt verifier to be set", async function () {
      const { token, pool, escrow, owner, nodeA, buyer } = await loadFixture(h.deployFixture);
      const fresh = await ethers.deployContract("NodeStaking", [token, pool, 1, 1, owner.address]);
      const p = await conflictingPair(escrow, nodeA, buyer);
      await expect(fresh.reportEquivocation(p.a, p.sigA, p.b, p.sigB)).to.be.revertedWithCustomError(
        fresh,
        "ReceiptVerifierNotSet",
      );
    });

    it("takes from unbonding stake when the bonded stake is not enough, and blocks withdrawal while jailed", async function () {
      const { staking, escrow, nodeA, buyer, reporter } = await loadFixture(h.marketFixture);
      const staked = (await staking.nodes(nodeA)).stake;
      await staking.connect(nodeA).requestUnbond(staked - 10n);
      await staking.setSlashing(10000, 5000); // take everything
      await staking.setJailDuration(30n * 24n * 3600n); // longer than the unbonding delay
      const p = await conflictingPair(escrow, nodeA, buyer);
      await staking.connect(reporter).reportEquivocation(p.a, p.sigA, p.b, p.sigB);
      const n = await staking.nodes(nodeA);
      expect(n.stake).to.equal(0n);
      expect(n.unbonding).to.equal(0n);
      expect(n.slashed).to.equal(staked);

      // a partially slashed node keeps the rest but cannot withdraw it while jailed
      await staking.setSlashing(5000, 5000);
      await staking.connect(nodeA).stake(100n);
      await staking.connect(nodeA).requestUnbond(100n);
      const q = await conflictingPair(escrow, nodeA, buyer);
      await staking.connect(reporter).reportEquivocation(q.a, q.sigA, q.b, q.sigB);
      expect((await staking.nodes(nodeA)).unbonding).to.equal(50n);
      await time.increase(h.UNBONDING_DELAY);
      const until = (await staking.nodes(nodeA)).jailedUntil;
      await expect(staking.connect(nodeA).withdraw()).to.be.revertedWithCustomError(staking, "NodeJailed").withArgs(until);
      await time.increaseTo(until);
      await expect(staking.connect(nodeA).withdraw()).to.emit(staking, "Withdrawn").withArgs(nodeA.address, 50n);
    });

    it("gives everything to the reporter or everything to the pool when configured so", async function () {
      const { staking, escrow, token, pool, nodeA, nodeB, buyer, reporter } = await loadFixture(h.marketFixture);
      await staking.setSlashing(1000, 10000);
      const p = await conflictingPair(escrow, nodeA, buyer);
      const amountA = (await staking.nodes(nodeA)).stake / 10n;
      const tx = staking.connect(reporter).reportEquivocation(p.a, p.sigA, p.b, p.sigB);
      await expect(tx).to.changeTokenBalances(token, [reporter, pool], [amountA, 0n]);
      await expect(tx).not.to.emit(pool, "RewardFunded");

      await staking.setSlashing(1000, 0);
      const q = await conflictingPair(escrow, nodeB, buyer);
      const amountB = (await staking.nodes(nodeB)).stake / 10n;
      const tx2 = staking.connect(reporter).reportEquivocation(q.a, q.sigA, q.b, q.sigB);
      await expect(tx2).to.changeTokenBalances(token, [reporter, pool], [0n, amountB]);
    });

    it("jails (without moving tokens) a registered node with no stake, and never shortens a jail", async function () {
      const { staking, escrow, token, other, buyer, reporter } = await loadFixture(h.marketFixture);
      await staking.connect(other).register(ethers.ZeroHash);
      const p = await conflictingPair(escrow, other, buyer);
      const tx = staking.connect(reporter).reportEquivocation(p.a, p.sigA, p.b, p.sigB);
      await expect(tx).to.emit(staking, "Slashed");
      await expect(tx).to.changeTokenBalance(token, reporter, 0n);
      const until = (await staking.nodes(other)).jailedUntil;
      await staking.setJailDuration(60);
      const q = await conflictingPair(escrow, other, buyer);
      await expect(staking.connect(reporter).reportEquivocation(q.a, q.sigA, q.b, q.sigB))
        .to.emit(staking, "Jailed")
        .withArgs(other.address, until);
    });
  });

  describe("slashByVerdicts", function () {
    it("slashes with a quorum of validator signatures", async function () {
      const { staking, token, nodeA, v1, v3, reporter } = await loadFixture(validatorsFixture);
      const v = await verdictFor(nodeA);
      const sigs = await quorumSigs(staking, [v1, v3], v);
      const amount = (await staking.nodes(nodeA)).stake / 2n;
      const offence = await staking.verdictOffence(nodeA.address, v.sessionId);
      const tx = staking.connect(reporter).slashByVerdicts(v, sigs);
      await expect(tx)
        .to.emit(staking, "Slashed")
        .withArgs(nodeA.address, offence, reporter.address, amount, amount / 2n, amount - amount / 2n);
      await expect(tx).to.changeTokenBalance(token, reporter, amount / 2n);
      expect(await staking.isRoutable(nodeA)).to.equal(false);
    });

    it("refuses a double slash for the same session", async function () {
      const { staking, nodeA, v1, v2, v3 } = await loadFixture(validatorsFixture);
      const v = await verdictFor(nodeA);
      await staking.slashByVerdicts(v, await quorumSigs(staking, [v1, v2], v));
      const again = await verdictFor(nodeA, { evidenceHash: ethers.id("other evidence") });
      await expect(staking.slashByVerdicts(again, await quorumSigs(staking, [v2, v3], again)))
        .to.be.revertedWithCustomError(staking, "AlreadySlashed")
        .withArgs(await staking.verdictOffence(nodeA.address, v.sessionId));
    });

    it("refuses too few signatures", async function () {
      const { staking, nodeA, v1 } = await loadFixture(validatorsFixture);
      const v = await verdictFor(nodeA);
      await expect(staking.slashByVerdicts(v, await quorumSigs(staking, [v1], v)))
        .to.be.revertedWithCustomError(staking, "QuorumNotReached")
        .withArgs(1, 2);
    });

    it("refuses a duplicated or unordered validator signature", async function () {
      const { staking, nodeA, v1, v2 } = await loadFixture(validatorsFixture);
      const v = await verdictFor(nodeA);
      const s1 = await h.signVerdict(v1, staking, v);
      await expect(staking.slashByVerdicts(v, [s1, s1]))
        .to.be.revertedWithCustomError(staking, "SignersNotAscending")
        .withArgs(v1.address);
      const sorted = await quorumSigs(staking, [v1, v2], v);
      await expect(staking.slashByVerdicts(v, [sorted[1], sorted[0]])).to.be.revertedWithCustomError(
        staking,
        "SignersNotAscending",
      );
    });

    it("refuses signatures by non-validators, and signatures of another verdict", async function () {
      const { staking, nodeA, v1, other } = await loadFixture(validatorsFixture);
      const v = await verdictFor(nodeA);
      await expect(staking.slashByVerdicts(v, await quorumSigs(staking, [v1, other], v)))
        .to.be.revertedWithCustomError(staking, "SignerNotValidator")
        .withArgs(other.address);
      // validators signed "not guilty"; the submitter flips the flag: signatures no longer match
      const innocent = { ...v, guilty: false };
      const sigs = await quorumSigs(staking, [v1, other], innocent);
      await expect(staking.slashByVerdicts(v, sigs)).to.be.revertedWithCustomError(staking, "SignerNotValidator");
    });

    it("refuses a not-guilty verdict and an expired one", async function () {
      const { staking, nodeA, v1, v2 } = await loadFixture(validatorsFixture);
      const innocent = await verdictFor(nodeA, { guilty: false });
      await expect(
        staking.slashByVerdicts(innocent, await quorumSigs(staking, [v1, v2], innocent)),
      ).to.be.revertedWithCustomError(staking, "VerdictNotGuilty");
      const v = await verdictFor(nodeA);
      const sigs = await quorumSigs(staking, [v1, v2], v);
      await time.increaseTo(v.deadline + 1n);
      await expect(staking.slashByVerdicts(v, sigs))
        .to.be.revertedWithCustomError(staking, "VerdictExpired")
        .withArgs(v.deadline);
    });

    it("is disabled until a quorum is set", async function () {
      const { staking, nodeA } = await loadFixture(h.marketFixture);
      const v = await verdictFor(nodeA);
      await expect(staking.slashByVerdicts(v, [])).to.be.revertedWithCustomError(staking, "VerdictSlashingDisabled");
    });

    it("refuses a validator removed from the set", async function () {
      const { staking, nodeA, v1, v2, v3 } = await loadFixture(validatorsFixture);
      await staking.removeValidator(v2.address);
      const v = await verdictFor(nodeA);
      await expect(staking.slashByVerdicts(v, await quorumSigs(staking, [v1, v2], v)))
        .to.be.revertedWithCustomError(staking, "SignerNotValidator")
        .withArgs(v2.address);
      await expect(staking.slashByVerdicts(v, await quorumSigs(staking, [v1, v3], v))).to.emit(staking, "Slashed");
    });

    it("verdictDigest matches the EIP-712 hash computed off-chain", async function () {
      const { staking, nodeA } = await loadFixture(h.deployFixture);
      const v = await verdictFor(nodeA);
      expect(await staking.verdictDigest(v)).to.equal(
        ethers.TypedDataEncoder.hash(await h.domainOf(staking), h.VERDICT_TYPES, v),
      );
    });
  });

  describe("validator set", function () {
    it("adds and removes validators and keeps the quorum reachable", async function () {
      const { staking, v1, v2 } = await loadFixture(h.deployFixture);
      await expect(staking.addValidator(v1.address)).to.emit(staking, "ValidatorAdded").withArgs(v1.address);
      await expect(staking.addValidator(v1.address))
        .to.be.revertedWithCustomError(staking, "AlreadyValidator")
        .withArgs(v1.address);
      await expect(staking.addValidator(ethers.ZeroAddress)).to.be.revertedWithCustomError(staking, "ZeroAddress");
      await staking.addValidator(v2.address);
      expect(await staking.validatorCount()).to.equal(2n);
      await expect(staking.setQuorum(2)).to.emit(staking, "QuorumChanged").withArgs(2);
      await expect(staking.setQuorum(3)).to.be.revertedWithCustomError(staking, "InvalidQuorum").withArgs(3, 2);
      await expect(staking.setQuorum(0)).to.be.revertedWithCustomError(staking, "InvalidQuorum").withArgs(0, 2);
      await expect(staking.removeValidator(v2.address)).to.be.revertedWithCustomError(staking, "InvalidQuorum").withArgs(2, 1);
      await staking.setQuorum(1);
      await expect(staking.removeValidator(v2.address)).to.emit(staking, "ValidatorRemoved").withArgs(v2.address);
      expect(await staking.isValidator(v2)).to.equal(false);
      expect(await staking.validatorCount()).to.equal(1n);
      await expect(staking.removeValidator(v2.address))
        .to.be.revertedWithCustomError(staking, "NotValidator")
        .withArgs(v2.address);
    });

    it("is owner only", async function () {
      const { staking, other, v1 } = await loadFixture(h.deployFixture);
      const s = staking.connect(other);
      await expect(s.addValidator(v1.address)).to.be.revertedWithCustomError(staking, "OwnableUnauthorizedAccount");
      await expect(s.removeValidator(v1.address)).to.be.revertedWithCustomError(staking, "OwnableUnauthorizedAccount");
      await expect(s.setQuorum(1)).to.be.revertedWithCustomError(staking, "OwnableUnauthorizedAccount");
    });
  });

  describe("parameters", function () {
    it("sets each parameter with an event, owner only", async function () {
      const { staking, escrow, other } = await loadFixture(h.deployFixture);
      await expect(staking.setMinStake(5)).to.emit(staking, "MinStakeChanged").withArgs(5);
      expect(await staking.minStake()).to.equal(5n);
      await expect(staking.setUnbondingDelay(6)).to.emit(staking, "UnbondingDelayChanged").withArgs(6);
      expect(await staking.unbondingDelay()).to.equal(6n);
      await expect(staking.setJailDuration(7)).to.emit(staking, "JailDurationChanged").withArgs(7);
      expect(await staking.jailDuration()).to.equal(7n);
      await expect(staking.setSlashing(100, 200)).to.emit(staking, "SlashingChanged").withArgs(100, 200);
      expect(await staking.slashBps()).to.equal(100n);
      expect(await staking.reporterShareBps()).to.equal(200n);
      const prev = await staking.receiptVerifier();
      await expect(staking.setReceiptVerifier(other.address))
        .to.emit(staking, "ReceiptVerifierChanged")
        .withArgs(prev, other.address);
      await staking.setReceiptVerifier(escrow);

      const s = staking.connect(other);
      for (const call of [
        () => s.setMinStake(1),
        () => s.setUnbondingDelay(1),
        () => s.setJailDuration(1),
        () => s.setSlashing(1, 1),
        () => s.setReceiptVerifier(other.address),
      ]) {
        await expect(call()).to.be.revertedWithCustomError(staking, "OwnableUnauthorizedAccount");
      }
    });

    it("rejects invalid basis points and a zero verifier", async function () {
      const { staking } = await loadFixture(h.deployFixture);
      await expect(staking.setSlashing(10001, 0)).to.be.revertedWithCustomError(staking, "InvalidBps").withArgs(10001);
      await expect(staking.setSlashing(0, 10001)).to.be.revertedWithCustomError(staking, "InvalidBps").withArgs(10001);
      await expect(staking.setReceiptVerifier(ethers.ZeroAddress)).to.be.revertedWithCustomError(staking, "ZeroAddress");
    });
  });
});
