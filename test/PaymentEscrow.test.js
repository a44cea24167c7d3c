const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

describe("PaymentEscrow", function () {
  describe("constructor", function () {
    it("stores its wiring and approves the pool for fees", async function () {
      const { escrow, token, staking, pool, owner } = await loadFixture(h.deployFixture);
      expect(await escrow.token()).to.equal(await token.getAddress());
      expect(await escrow.staking()).to.equal(await staking.getAddress());
      expect(await escrow.rewardPool()).to.equal(await pool.getAddress());
      expect(await escrow.feeBps()).to.equal(h.FEE_BPS);
      expect(await escrow.withdrawDelay()).to.equal(h.WITHDRAW_DELAY);
      expect(await escrow.owner()).to.equal(owner.address);
      expect(await token.allowance(escrow, pool)).to.equal(ethers.MaxUint256);
      const domain = await escrow.eip712Domain();
      expect(domain.name).to.equal("inferchain");
      expect(domain.version).to.equal("1");
    });

    it("rejects zero addresses and a fee above the cap", async function () {
      const { token, staking, pool, owner } = await loadFixture(h.deployFixture);
      const F = await ethers.getContractFactory("PaymentEscrow");
      const Z = ethers.ZeroAddress;
      await expect(F.deploy(Z, staking, pool, 0, 0, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
      await expect(F.deploy(token, Z, pool, 0, 0, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
      await expect(F.deploy(token, staking, Z, 0, 0, owner)).to.be.revertedWithCustomError(F, "ZeroAddress");
      await expect(F.deploy(token, staking, pool, 2001, 0, owner))
        .to.be.revertedWithCustomError(F, "FeeTooHigh")
        .withArgs(2001);
    });
  });

  describe("deposit / depositFor", function () {
    it("credits the caller and pulls the tokens", async function () {
      const { escrow, token, buyer } = await loadFixture(h.deployFixture);
      const tx1 = escrow.connect(buyer).deposit(5n * h.E18);
      await expect(tx1)
        .to.emit(escrow, "Deposited")
        .withArgs(buyer.address, buyer.address, 5n * h.E18, 5n * h.E18);
      await expect(tx1).to.changeTokenBalances(token, [buyer, escrow], [-5n * h.E18, 5n * h.E18]);
      expect(await escrow.balanceOf(buyer)).to.equal(5n * h.E18);
    });

    it("credits another account with depositFor", async function () {
      const { escrow, token, owner, buyer } = await loadFixture(h.deployFixture);
      await token.mint(owner.address, 100n);
      const tx = escrow.depositFor(buyer.address, 7n);
      await expect(tx).to.emit(escrow, "Deposited").withArgs(buyer.address, owner.address, 7n, 7n);
      await expect(tx).to.changeTokenBalances(token, [owner, buyer], [-7n, 0n]);
      expect(await escrow.balanceOf(buyer)).to.equal(7n);
    });

    it("rejects zero amounts and the zero buyer", async function () {
      const { escrow, buyer } = await loadFixture(h.deployFixture);
      await expect(escrow.connect(buyer).deposit(0)).to.be.revertedWithCustomError(escrow, "ZeroAmount");
      await expect(escrow.connect(buyer).depositFor(buyer.address, 0)).to.be.revertedWithCustomError(escrow, "ZeroAmount");
      await expect(escrow.connect(buyer).depositFor(ethers.ZeroAddress, 1)).to.be.revertedWithCustomError(
        escrow,
        "ZeroAddress",
      );
    });

    it("fails when the allowance is missing", async function () {
      const { escrow, token, other } = await loadFixture(h.deployFixture);
      await token.connect(other).approve(escrow, 0);
      await expect(escrow.connect(other).deposit(1)).to.be.revertedWithCustomError(token, "ERC20InsufficientAllowance");
    });
  });

  describe("withdrawals", function () {
    it("withdraws only after the delay (request, wait, withdraw)", async function () {
      const { escrow, token, buyer } = await loadFixture(h.marketFixture);
      const tx = escrow.connect(buyer).requestWithdrawal(100n);
      const at = BigInt(await time.latest()) + 1n + h.WITHDRAW_DELAY;
      await expect(tx).to.emit(escrow, "WithdrawalRequested").withArgs(buyer.address, 100n, at);
      const req = await escrow.withdrawals(buyer);
      expect(req.amount).to.equal(100n);
      expect(req.availableAt).to.equal(at);

      await expect(escrow.connect(buyer).withdraw())
        .to.be.revertedWithCustomError(escrow, "WithdrawalNotReady")
        .withArgs(at);
      await time.increaseTo(at);
      const tx2 = escrow.connect(buyer).withdraw();
      await expect(tx2)
        .to.emit(escrow, "Withdrawn")
        .withArgs(buyer.address, 100n);
      await expect(tx2).to.changeTokenBalances(token, [buyer, escrow], [100n, -100n]);
      expect((await escrow.withdrawals(buyer)).amount).to.equal(0n);
      await expect(escrow.connect(buyer).withdraw()).to.be.revertedWithCustomError(escrow, "NoPendingWithdrawal");
    });

    it("rejects zero and more than the balance", async function () {
      const { escrow, buyer } = await loadFixture(h.marketFixture);
      await expect(escrow.connect(buyer).requestWithdrawal(0)).to.be.revertedWithCustomError(escrow, "ZeroAmount");
      const bal = await escrow.balanceOf(buyer);
      await expect(escrow.connect(buyer).requestWithdrawal(bal + 1n))
        .to.be.revertedWithCustomError(escrow, "InsufficientDeposit")
        .withArgs(buyer.address, bal, bal + 1n);
    });

    it("cancels a pending request, and refuses to cancel none", async function () {
      const { escrow, buyer } = await loadFixture(h.marketFixture);
      await expect(escrow.connect(buyer).cancelWithdrawal()).to.be.revertedWithCustomError(escrow, "NoPendingWithdrawal");
      await escrow.connect(buyer).requestWithdrawal(5n);
      await expect(escrow.connect(buyer).cancelWithdrawal()).to.emit(escrow, "WithdrawalCancelled").withArgs(buyer.address);
      await time.increase(h.WITHDRAW_DELAY);
      await expect(escrow.connect(buyer).withdraw()).to.be.revertedWithCustomError(escrow, "NoPendingWithdrawal");
    });

    it("keeps paying receipts during the delay and withdraws only what is left", async function () {
      const { escrow, token, nodeA, buyer } = await loadFixture(h.marketFixture);
      const bal = await escrow.balanceOf(buyer);
      await escrow.connect(buyer).requestWithdrawal(bal);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await escrow.settle(s.r, s.nodeSig, s.buyerSig);
      await time.increase(h.WITHDRAW_DELAY);
      const left = bal - h.owed(s.r);
      const tx3 = escrow.connect(buyer).withdraw();
      await expect(tx3)
        .to.emit(escrow, "Withdrawn")
        .withArgs(buyer.address, left);
      await expect(tx3).to.changeTokenBalance(token, buyer, left);
      expect(await escrow.balanceOf(buyer)).to.equal(0n);
    });

    it("completes with nothing when settlements spent the whole balance", async function () {
      const { escrow, token, nodeA, buyer, owner } = await loadFixture(h.deployFixture);
      await token.mint(owner.address, 10n * h.E18);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await escrow.depositFor(buyer.address, h.owed(s.r));
      await escrow.connect(buyer).requestWithdrawal(1n);
      await escrow.settle(s.r, s.nodeSig, s.buyerSig);
      await time.increase(h.WITHDRAW_DELAY);
      const tx4 = escrow.connect(buyer).withdraw();
      await expect(tx4)
        .to.emit(escrow, "Withdrawn")
        .withArgs(buyer.address, 0n);
      await expect(tx4).to.changeTokenBalance(token, buyer, 0n);
    });
  });

  describe("setSignerAuthorization", function () {
    it("allows and revokes a countersigner", async function () {
      const { escrow, buyer, other } = await loadFixture(h.deployFixture);
      await expect(escrow.connect(buyer).setSignerAuthorization(other.address, true))
        .to.emit(escrow, "SignerAuthorizationChanged")
        .withArgs(buyer.address, other.address, true);
      expect(await escrow.isAuthorizedSigner(buyer, other)).to.equal(true);
      await expect(escrow.connect(buyer).setSignerAuthorization(other.address, false))
        .to.emit(escrow, "SignerAuthorizationChanged")
        .withArgs(buyer.address, other.address, false);
      expect(await escrow.isAuthorizedSigner(buyer, other)).to.equal(false);
    });

    it("rejects the zero address", async function () {
      const { escrow, buyer } = await loadFixture(h.deployFixture);
      await expect(escrow.connect(buyer).setSignerAuthorization(ethers.ZeroAddress, true)).to.be.revertedWithCustomError(
        escrow,
        "ZeroAddress",
      );
    });
  });

  describe("settle", function () {
    it("pays the node, funds the pool with the fee and records contribution", async function () {
      const { escrow, pool, token, nodeA, buyer, other } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      const amount = h.owed(s.r);
      const fee = (amount * h.FEE_BPS) / 10000n;
      expect(amount).to.be.gt(0n);
      const before = await escrow.balanceOf(buyer);
      const epoch = await pool.currentEpoch();
      const tx = escrow.connect(other).settle(s.r, s.nodeSig, s.buyerSig);
      await expect(tx)
        .to.emit(escrow, "ReceiptSettled")
        .withArgs(h.receiptKey(s.r), buyer.address, nodeA.address, amount, fee);
      await expect(tx).to.emit(pool, "RewardFunded").withArgs(epoch, await escrow.getAddress(), fee);
      await expect(tx).to.emit(pool, "ContributionRecorded").withArgs(epoch, nodeA.address, h.contributionOf(s.r));
      await expect(tx).to.changeTokenBalances(token, [escrow, pool], [-fee, fee]);
      expect(await escrow.balanceOf(buyer)).to.equal(before - amount);
      expect(await escrow.earnings(nodeA)).to.equal(amount - fee);
      expect(await escrow.settled(h.receiptKey(s.r))).to.equal(true);
      expect(await pool.contributionOf(epoch, nodeA)).to.equal(h.contributionOf(s.r));
    });

    it("computes amount = (tokensIn + tokensOut) x layers x pricePer1k / 1000", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({
        node: nodeA.address,
        buyer: buyer.address,
        tokensIn: 700n,
        tokensOut: 300n,
        spanStart: 4,
        spanEnd: 7,
        pricePer1k: 2n * h.E18,
      });
      const [amount, fee, contribution] = await escrow.quote(r);
      expect(contribution).to.equal(3000n);
      expect(amount).to.equal(6n * h.E18);
      expect(fee).to.equal((6n * h.E18 * h.FEE_BPS) / 10000n);
    });

    it("refuses a replayed receipt", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await escrow.settle(s.r, s.nodeSig, s.buyerSig);
      await expect(escrow.settle(s.r, s.nodeSig, s.buyerSig))
        .to.be.revertedWithCustomError(escrow, "ReceiptAlreadySettled")
        .withArgs(h.receiptKey(s.r));
    });

    it("refuses a second, different receipt for the same session, node and span", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await escrow.settle(s.r, s.nodeSig, s.buyerSig);
      const s2 = await h.signedReceipt(escrow, nodeA, buyer, { sessionId: s.r.sessionId, tokensOut: 999n });
      await expect(escrow.settle(s2.r, s2.nodeSig, s2.buyerSig)).to.be.revertedWithCustomError(
        escrow,
        "ReceiptAlreadySettled",
      );
    });

    it("refuses a receipt signed for another chain id", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      const nodeSig = await h.signReceipt(nodeA, escrow, r, 1n);
      const buyerSig = await h.signReceipt(buyer, escrow, r);
      await expect(escrow.settle(r, nodeSig, buyerSig))
        .to.be.revertedWithCustomError(escrow, "InvalidNodeSignature")
        .withArgs(h.receiptKey(r));
      const nodeSig2 = await h.signReceipt(nodeA, escrow, r);
      const buyerSig2 = await h.signReceipt(buyer, escrow, r, 1n);
      await expect(escrow.settle(r, nodeSig2, buyerSig2)).to.be.revertedWithCustomError(escrow, "InvalidBuyerSignature");
    });

    it("refuses a receipt signed for another contract", async function () {
      const { escrow, staking, nodeA, buyer } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      const nodeSig = await h.signReceipt(nodeA, staking, r); // staking's domain, not the escrow's
      const buyerSig = await h.signReceipt(buyer, escrow, r);
      await expect(escrow.settle(r, nodeSig, buyerSig)).to.be.revertedWithCustomError(escrow, "InvalidNodeSignature");
    });

    it("refuses a node signature by someone else", async function () {
      const { escrow, nodeA, nodeB, buyer } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      const nodeSig = await h.signReceipt(nodeB, escrow, r);
      const buyerSig = await h.signReceipt(buyer, escrow, r);
      await expect(escrow.settle(r, nodeSig, buyerSig))
        .to.be.revertedWithCustomError(escrow, "InvalidNodeSignature")
        .withArgs(h.receiptKey(r));
    });

    it("refuses a countersignature by someone else, and garbage signatures", async function () {
      const { escrow, nodeA, buyer, other } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      const nodeSig = await h.signReceipt(nodeA, escrow, r);
      const otherSig = await h.signReceipt(other, escrow, r);
      await expect(escrow.settle(r, nodeSig, otherSig))
        .to.be.revertedWithCustomError(escrow, "InvalidBuyerSignature")
        .withArgs(h.receiptKey(r), other.address);
      await expect(escrow.settle(r, nodeSig, "0x1234"))
        .to.be.revertedWithCustomError(escrow, "InvalidBuyerSignature")
        .withArgs(h.receiptKey(r), ethers.ZeroAddress);
      await expect(escrow.settle(r, "0x", nodeSig)).to.be.revertedWithCustomError(escrow, "InvalidNodeSignature");
    });

    it("never accepts a malformed signature, even for a zero node or buyer", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const zeroNode = await h.makeReceipt({ node: ethers.ZeroAddress, buyer: buyer.address, tokensIn: 0n, tokensOut: 0n });
      await expect(escrow.settle(zeroNode, "0x", await h.signReceipt(buyer, escrow, zeroNode)))
        .to.be.revertedWithCustomError(escrow, "InvalidNodeSignature")
        .withArgs(h.receiptKey(zeroNode));
      const zeroBuyer = await h.makeReceipt({ node: nodeA.address, buyer: ethers.ZeroAddress, tokensIn: 0n, tokensOut: 0n });
      await expect(escrow.settle(zeroBuyer, await h.signReceipt(nodeA, escrow, zeroBuyer), "0x"))
        .to.be.revertedWithCustomError(escrow, "InvalidBuyerSignature")
        .withArgs(h.receiptKey(zeroBuyer), ethers.ZeroAddress);
    });

    it("refuses a tampered receipt (signed fields changed after signing)", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      const tampered = { ...s.r, tokensOut: s.r.tokensOut + 1n };
      await expect(escrow.settle(tampered, s.nodeSig, s.buyerSig)).to.be.revertedWithCustomError(
        escrow,
        "InvalidNodeSignature",
      );
    });

    it("accepts a countersignature by an authorised signer, not after revocation", async function () {
      const { escrow, nodeA, buyer, other } = await loadFixture(h.marketFixture);
      await escrow.connect(buyer).setSignerAuthorization(other.address, true);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      await expect(escrow.settle(r, await h.signReceipt(nodeA, escrow, r), await h.signReceipt(other, escrow, r))).to.emit(
        escrow,
        "ReceiptSettled",
      );
      await escrow.connect(buyer).setSignerAuthorization(other.address, false);
      const r2 = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      await expect(
        escrow.settle(r2, await h.signReceipt(nodeA, escrow, r2), await h.signReceipt(other, escrow, r2)),
      ).to.be.revertedWithCustomError(escrow, "InvalidBuyerSignature");
    });

    it("refuses settlement beyond the deposit", async function () {
      const { escrow, nodeA, other } = await loadFixture(h.marketFixture);
      await escrow.connect(other).deposit(1n);
      const s = await h.signedReceipt(escrow, nodeA, other);
      await expect(escrow.settle(s.r, s.nodeSig, s.buyerSig))
        .to.be.revertedWithCustomError(escrow, "InsufficientDeposit")
        .withArgs(other.address, 1n, h.owed(s.r));
    });

    it("refuses an empty or reversed span", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      for (const [a, b] of [
        [3, 3],
        [5, 2],
      ]) {
        const s = await h.signedReceipt(escrow, nodeA, buyer, { spanStart: a, spanEnd: b });
        await expect(escrow.settle(s.r, s.nodeSig, s.buyerSig))
          .to.be.revertedWithCustomError(escrow, "InvalidSpan")
          .withArgs(h.receiptKey(s.r));
      }
    });

    it("refuses a buyer paying itself", async function () {
      const { escrow, nodeA } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, nodeA);
      await expect(escrow.settle(s.r, s.nodeSig, s.buyerSig)).to.be.revertedWithCustomError(escrow, "SelfDealing");
    });

    it("refuses an expired receipt", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await time.increaseTo(s.r.expiry + 1n);
      await expect(escrow.settle(s.r, s.nodeSig, s.buyerSig))
        .to.be.revertedWithCustomError(escrow, "ReceiptExpired")
        .withArgs(h.receiptKey(s.r), s.r.expiry);
    });

    it("pays an unroutable node but records no contribution for it", async function () {
      const { escrow, pool, other, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, other, buyer); // `other` never staked
      const tx = escrow.settle(s.r, s.nodeSig, s.buyerSig);
      await expect(tx).to.emit(escrow, "ReceiptSettled");
      await expect(tx).not.to.emit(pool, "ContributionRecorded");
      expect(await escrow.earnings(other)).to.be.gt(0n);
    });

    it("settles a free receipt without fee or contribution", async function () {
      const { escrow, pool, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer, { tokensIn: 0n, tokensOut: 0n });
      const tx = escrow.settle(s.r, s.nodeSig, s.buyerSig);
      await expect(tx).to.emit(escrow, "ReceiptSettled").withArgs(h.receiptKey(s.r), buyer.address, nodeA.address, 0n, 0n);
      await expect(tx).not.to.emit(pool, "RewardFunded");
      await expect(tx).not.to.emit(pool, "ContributionRecorded");
      expect(await escrow.earnings(nodeA)).to.equal(0n);
    });
  });

  describe("settleBatch", function () {
    it("settles interleaved buyers and nodes with the same totals as one by one", async function () {
      const { escrow, pool, token, nodeA, nodeB, buyer, buyer2 } = await loadFixture(h.marketFixture);
      const pairs = [
        [nodeA, buyer],
        [nodeA, buyer],
        [nodeB, buyer],
        [nodeA, buyer2],
        [nodeB, buyer2],
        [nodeB, buyer],
      ];
      const items = [];
      for (const [n, b] of pairs) items.push(await h.signedReceipt(escrow, n, b, { tokensOut: BigInt(items.length + 1) }));
      const sum = (pred) => items.filter(pred).reduce((acc, s) => acc + h.owed(s.r), 0n);
      const fee = (x) => (x * h.FEE_BPS) / 10000n;
      const b1 = await escrow.balanceOf(buyer);
      const b2 = await escrow.balanceOf(buyer2);
      const epoch = await pool.currentEpoch();
      const tx = escrow.settleBatch(
        items.map((s) => s.r),
        items.map((s) => s.nodeSig),
        items.map((s) => s.buyerSig),
      );
      const totalFee = items.reduce((acc, s) => acc + fee(h.owed(s.r)), 0n);
      await expect(tx).to.changeTokenBalances(token, [escrow, pool], [-totalFee, totalFee]);
      expect(await escrow.balanceOf(buyer)).to.equal(b1 - sum((s) => s.r.buyer === buyer.address));
      expect(await escrow.balanceOf(buyer2)).to.equal(b2 - sum((s) => s.r.buyer === buyer2.address));
      for (const n of [nodeA, nodeB]) {
        const mine = items.filter((s) => s.r.node === n.address);
        const earned = mine.reduce((acc, s) => acc + h.owed(s.r) - fee(h.owed(s.r)), 0n);
        expect(await escrow.earnings(n)).to.equal(earned);
        const contrib = mine.reduce((acc, s) => acc + h.contributionOf(s.r), 0n);
        expect(await pool.contributionOf(epoch, n)).to.equal(contrib);
      }
      for (const s of items) expect(await escrow.settled(h.receiptKey(s.r))).to.equal(true);
    });

    it("checks the deposit cumulatively within a batch and reverts atomically", async function () {
      const { escrow, nodeA, other } = await loadFixture(h.marketFixture);
      const a = await h.signedReceipt(escrow, nodeA, other);
      const b = await h.signedReceipt(escrow, nodeA, other);
      await escrow.connect(other).deposit(h.owed(a.r) + h.owed(b.r) - 1n);
      await expect(escrow.settleBatch([a.r, b.r], [a.nodeSig, b.nodeSig], [a.buyerSig, b.buyerSig]))
        .to.be.revertedWithCustomError(escrow, "InsufficientDeposit")
        .withArgs(other.address, h.owed(b.r) - 1n, h.owed(b.r));
      expect(await escrow.settled(h.receiptKey(a.r))).to.equal(false);
    });

    it("refuses the same receipt twice in one batch", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const a = await h.signedReceipt(escrow, nodeA, buyer);
      await expect(escrow.settleBatch([a.r, a.r], [a.nodeSig, a.nodeSig], [a.buyerSig, a.buyerSig]))
        .to.be.revertedWithCustomError(escrow, "ReceiptAlreadySettled")
        .withArgs(h.receiptKey(a.r));
    });

    it("rejects an empty batch and mismatched lengths", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const a = await h.signedReceipt(escrow, nodeA, buyer);
      await expect(escrow.settleBatch([], [], [])).to.be.revertedWithCustomError(escrow, "EmptyBatch");
      await expect(escrow.settleBatch([a.r], [], [a.buyerSig])).to.be.revertedWithCustomError(escrow, "LengthMismatch");
      await expect(escrow.settleBatch([a.r], [a.nodeSig], [])).to.be.revertedWithCustomError(escrow, "LengthMismatch");
    });
  });

  describe("claimEarnings", function () {
    it("pays the node its earnings once", async function () {
      const { escrow, token, nodeA, buyer } = await loadFixture(h.marketFixture);
      const s = await h.signedReceipt(escrow, nodeA, buyer);
      await escrow.settle(s.r, s.nodeSig, s.buyerSig);
      const earned = await escrow.earnings(nodeA);
      const tx5 = escrow.connect(nodeA).claimEarnings();
      await expect(tx5)
        .to.emit(escrow, "EarningsClaimed")
        .withArgs(nodeA.address, earned);
      await expect(tx5).to.changeTokenBalances(token, [nodeA, escrow], [earned, -earned]);
      await expect(escrow.connect(nodeA).claimEarnings()).to.be.revertedWithCustomError(escrow, "NothingToClaim");
    });
  });

  describe("views", function () {
    it("receiptDigest matches the EIP-712 hash computed off-chain, receiptKey the documented key", async function () {
      const { escrow, nodeA, buyer } = await loadFixture(h.marketFixture);
      const r = await h.makeReceipt({ node: nodeA.address, buyer: buyer.address });
      const expected = ethers.TypedDataEncoder.hash(await h.domainOf(escrow), h.RECEIPT_TYPES, r);
      expect(await escrow.receiptDigest(r)).to.equal(expected);
      expect(await escrow.receiptKey(r)).to.equal(h.receiptKey(r));
    });
  });

  describe("governance", function () {
    it("sets the fee within the cap, owner only", async function () {
      const { escrow, other } = await loadFixture(h.deployFixture);
      await expect(escrow.setFeeBps(2000)).to.emit(escrow, "FeeChanged").withArgs(2000);
      expect(await escrow.feeBps()).to.equal(2000n);
      await expect(escrow.setFeeBps(2001)).to.be.revertedWithCustomError(escrow, "FeeTooHigh").withArgs(2001);
      await expect(escrow.connect(other).setFeeBps(1))
        .to.be.revertedWithCustomError(escrow, "OwnableUnauthorizedAccount")
        .withArgs(other.address);
    });

    it("sets the withdrawal delay, owner only", async function () {
      const { escrow, other } = await loadFixture(h.deployFixture);
      await expect(escrow.setWithdrawDelay(60)).to.emit(escrow, "WithdrawDelayChanged").withArgs(60);
      expect(await escrow.withdrawDelay()).to.equal(60n);
      await expect(escrow.connect(other).setWithdrawDelay(1)).to.be.revertedWithCustomError(
        escrow,
        "OwnableUnauthorizedAccount",
      );
    });
  });
});
