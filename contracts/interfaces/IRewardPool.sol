// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IRewardPool
/// @notice What the escrow and the staking contract need from the reward pool.
interface IRewardPool {
    /// @notice Pulls `amount` tokens from the caller into the current epoch's reward.
    function fund(uint256 amount) external;

    /// @notice Adds `amount` of contribution (tokens x layers) for `node` in the current epoch. Escrow only.
    function recordContribution(address node, uint256 amount) external;
}
