const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const h = require("./helpers");

describe("InferToken", function () {
  it("is the Inferchain Token (INFER, 18 decimals) with no initial supply", async function () {
    const { token, owner } = await loadFixture(h.deployFixture);
    expect(await token.name()).to.equal("Inferchain Token");
    expect(await token.symbol()).to.equal("INFER");
    expect(await token.decimals()).to.equal(18n);
    expect(await token.owner()).to.equal(owner.address);
  });

  it("lets the owner mint, nobody else", async function () {
    const { token, other } = await loadFixture(h.deployFixture);
    await expect(token.mint(other.address, 5n)).to.changeTokenBalance(token, other, 5n);
    await expect(token.connect(other).mint(other.address, 5n))
      .to.be.revertedWithCustomError(token, "OwnableUnauthorizedAccount")
      .withArgs(other.address);
  });

  it("accepts EIP-2612 permits", async function () {
    const { token, escrow, other } = await loadFixture(h.deployFixture);
    const deadline = BigInt(await time.latest()) + 600n;
    const network = await ethers.provider.getNetwork();
    const domain = {
      name: "Inferchain Token",
      version: "1",
      chainId: network.chainId,
      verifyingContract: await token.getAddress(),
    };
    const types = {
      Permit: [
        { name: "owner", type: "address" },
        { name: "spender", type: "address" },
        { name: "value", type: "uint256" },
        { name: "nonce", type: "uint256" },
        { name: "deadline", type: "uint256" },
      ],
    };
    const spender = await escrow.getAddress();
    const value = 123n;
    const sig = ethers.Signature.from(
      await other.signTypedData(domain, types, { owner: other.address, spender, value, nonce: 0n, deadline }),
    );
    await token.permit(other.address, spender, value, deadline, sig.v, sig.r, sig.s);
    expect(await token.allowance(other, spender)).to.equal(value);
  });
});
