// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title INodeStaking
/// @notice What the escrow and off-chain routing need from the node registry.
interface INodeStaking {
    /// @notice True when `node` is registered, holds at least the minimum stake and is not jailed.
    function isRoutable(address node) external view returns (bool);
}
