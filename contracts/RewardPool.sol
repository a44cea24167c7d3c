// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title RewardPool
/// @notice Epoch-based rewards. Protocol fees (from the escrow), the pool's share of slashed stake and any
///         other funding collected during an epoch are shared, once the epoch has ended, among the nodes in
///         proportion to the contribution (tokens x layers) the escrow settled for them in that epoch.
/// @dev Epoch `e` covers `[genesis + e * epochLength, genesis + (e + 1) * epochLength)`. Rounding dust of a
///      pro-rata share stays in the pool. An ended epoch with reward but no contribution can be rolled into
///      the current epoch by anyone, so no funding is stranded.
contract RewardPool is IRewardPool, Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The reward token (INFER).
    IERC20 public immutable token;
    /// @notice Start of epoch 0 (unix seconds).
    uint64 public immutable genesis;
    /// @notice Length of an epoch in seconds.
    uint64 public immutable epochLength;

    /// @notice The only account allowed to record contribution (the PaymentEscrow).
    address public escrow;

    /// @notice Reward collected in each epoch.
    mapping(uint256 epoch => uint256) public epochReward;
    /// @notice Total contribution settled in each epoch.
    mapping(uint256 epoch => uint256) public totalContribution;
    /// @notice Contribution settled for a node in an epoch.
    mapping(uint256 epoch => mapping(address node => uint256)) public contributionOf;
    /// @notice Whether a node has claimed its reward of an epoch.
    mapping(uint256 epoch => mapping(address node => bool)) public claimed;

    /// @notice `from` added `amount` to the reward of `epoch`.
    event RewardFunded(uint256 indexed epoch, address indexed from, uint256 amount);
    /// @notice The escrow recorded `amount` contribution for `node` in `epoch`.
    event ContributionRecorded(uint256 indexed epoch, address indexed node, uint256 amount);
    /// @notice `node` claimed `amount` of the reward of `epoch`.
    event RewardClaimed(uint256 indexed epoch, address indexed node, uint256 amount);
    /// @notice The reward of `fromEpoch`, which had no contribution, moved to `toEpoch`.
    event RewardRolledOver(uint256 indexed fromEpoch, uint256 indexed toEpoch, uint256 amount);
    /// @notice The escrow allowed to record contribution changed.
    event EscrowChanged(address indexed previousEscrow, address indexed newEscrow);

    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice A zero epoch length was given.
    error ZeroEpochLength();
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice Only the escrow may record contribution.
    error NotEscrow(address caller);
    /// @notice The epoch has not ended yet.
    error EpochNotEnded(uint256 epoch);
    /// @notice The caller already claimed the reward of this epoch.
    error AlreadyClaimed(uint256 epoch);
    /// @notice There is nothing to claim in the given epochs.
    error NothingToClaim();
    /// @notice The epoch has contribution or no reward, so there is nothing to roll over.
    error NothingToRollOver(uint256 epoch);

    /// @param token_ The reward token.
    /// @param epochLength_ Epoch length in seconds (> 0).
    /// @param initialOwner Account allowed to set the escrow.
    constructor(IERC20 token_, uint64 epochLength_, address initialOwner) Ownable(initialOwner) {
        if (address(token_) == address(0)) revert ZeroAddress();
        if (epochLength_ == 0) revert ZeroEpochLength();
        token = token_;
        epochLength = epochLength_;
        genesis = uint64(block.timestamp);
    }

    /// @notice The epoch that contains the current block.
    function currentEpoch() public view returns (uint256) {
        return (block.timestamp - genesis) / epochLength;
    }

    /// @notice Sets the contract allowed to record contribution.
    /// @dev Only the owner. Emits {EscrowChanged}.
    /// @param newEscrow The PaymentEscrow.
    function setEscrow(address newEscrow) external onlyOwner {
        if (newEscrow == address(0)) revert ZeroAddress();
        emit EscrowChanged(escrow, newEscrow);
        escrow = newEscrow;
    }

    /// @notice Pulls `amount` tokens from the caller and adds them to the current epoch's reward.
    /// @dev Anyone may fund (the escrow sends fees, the staking contract slashed stake). Needs an allowance.
    ///      Emits {RewardFunded}.
    /// @param amount Amount in token wei (> 0).
    function fund(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 epoch = currentEpoch();
        epochReward[epoch] += amount;
        emit RewardFunded(epoch, msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Records `amount` contribution (tokens x layers) for `node` in the current epoch.
    /// @dev Only the escrow, when it settles receipts. Emits {ContributionRecorded}.
    /// @param node The node that served the work.
    /// @param amount Contribution units.
    function recordContribution(address node, uint256 amount) external {
        if (msg.sender != escrow) revert NotEscrow(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 epoch = currentEpoch();
        contributionOf[epoch][node] += amount;
        totalContribution[epoch] += amount;
        emit ContributionRecorded(epoch, node, amount);
    }

    /// @notice Reward `node` can still claim for `epoch` (0 if not ended, claimed or no contribution).
    /// @param epoch The epoch.
    /// @param node The node.
    function claimable(uint256 epoch, address node) public view returns (uint256) {
        if (epoch >= currentEpoch() || claimed[epoch][node]) return 0;
        uint256 total = totalContribution[epoch];
        if (total == 0) return 0;
        return (epochReward[epoch] * contributionOf[epoch][node]) / total;
    }

    /// @notice Claims the caller's reward for each of the given ended epochs.
    /// @dev The loop is bounded by the caller's own list. Emits {RewardClaimed} per epoch with a share.
    /// @param epochs Ended epochs to claim, each at most once.
    /// @return total Amount transferred to the caller.
    function claim(uint256[] calldata epochs) external nonReentrant returns (uint256 total) {
        uint256 current = currentEpoch();
        for (uint256 i = 0; i < epochs.length; ++i) {
            uint256 epoch = epochs[i];
            if (epoch >= current) revert EpochNotEnded(epoch);
            if (claimed[epoch][msg.sender]) revert AlreadyClaimed(epoch);
            uint256 contribution = contributionOf[epoch][msg.sender];
            if (contribution == 0) continue;
            claimed[epoch][msg.sender] = true;
            uint256 share = (epochReward[epoch] * contribution) / totalContribution[epoch];
            total += share;
            emit RewardClaimed(epoch, msg.sender, share);
        }
        if (total == 0) revert NothingToClaim();
        token.safeTransfer(msg.sender, total);
    }

    /// @notice Moves the reward of an ended epoch without any contribution into the current epoch.
    /// @dev Anyone may call. Emits {RewardRolledOver}.
    /// @param epoch An ended epoch with reward and no contribution.
    function rollOver(uint256 epoch) external {
        uint256 current = currentEpoch();
        if (epoch >= current) revert EpochNotEnded(epoch);
        uint256 amount = epochReward[epoch];
        if (amount == 0 || totalContribution[epoch] != 0) revert NothingToRollOver(epoch);
        epochReward[epoch] = 0;
        epochReward[current] += amount;
        emit RewardRolledOver(epoch, current, amount);
    }
}
