// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title InferToken
/// @notice The single ERC-20 of inferchain ("Inferchain Token", INFER, 18 decimals): nodes stake it, buyers pay
///         with it through the escrow, and the reward pool distributes it.
/// @dev Plain OpenZeppelin ERC-20 with EIP-2612 permits. The owner may mint; on a devnet that is the deployer,
///      on a public network ownership is expected to be renounced (or given to a governed minter) after the
///      initial distribution.
contract InferToken is ERC20, ERC20Permit, Ownable {
    /// @param initialOwner Account allowed to mint.
    constructor(address initialOwner) ERC20("Inferchain Token", "INFER") ERC20Permit("Inferchain Token") Ownable(initialOwner) {}

    /// @notice Mints `amount` tokens to `to`.
    /// @dev Only the owner. Emits {Transfer} from the zero address.
    /// @param to Recipient of the new tokens.
    /// @param amount Amount in token wei (18 decimals).
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
