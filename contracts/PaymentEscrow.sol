// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {INodeStaking} from "./interfaces/INodeStaking.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";
import {IReceiptVerifier} from "./interfaces/IReceiptVerifier.sol";
import {Receipt, Receipts} from "./libraries/Receipts.sol";

/// @title PaymentEscrow
/// @notice Buyers' deposits, and payment of nodes against EIP-712 receipts signed by the node and
///         countersigned by the buyer (or by a signer the buyer authorised, e.g. a reseller's key).
/// @dev Receipts are signed in this contract's domain {name: "inferchain", version: "1"}. Each receipt key
///      (session, node, span) settles at most once. Of the amount owed, `feeBps` funds the reward pool and
///      the rest accrues to the node's earnings, which the node claims. The node's contribution
///      (tokens x layers) is recorded in the reward pool when the node is routable (staked, not jailed).
///      Withdrawals always go through a request and `withdrawDelay`: during the delay the deposit still
///      pays receipts the buyer signed before, so a node cannot be cheated out of earned pay.
contract PaymentEscrow is IReceiptVerifier, Ownable, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using Receipts for Receipt;

    /// @notice A buyer's pending withdrawal.
    /// @param amount Requested amount (capped by the balance left when executed).
    /// @param availableAt Earliest execution time.
    struct WithdrawalRequest {
        uint256 amount;
        uint64 availableAt;
    }

    /// @dev Running totals of one settlement call; consecutive receipts of one buyer or one node share one
    ///      storage read and write, which is what keeps batches cheap.
    struct Batch {
        address buyer;
        uint256 buyerBalance;
        address node;
        uint256 nodeEarned;
        uint256 nodeContribution;
        uint256 fees;
    }

    /// @notice Upper bound of the protocol fee (20%).
    uint16 public constant MAX_FEE_BPS = 2_000;

    /// @notice The payment token (INFER).
    IERC20 public immutable token;
    /// @notice The node registry, asked whether a node's contribution counts for rewards.
    INodeStaking public immutable staking;
    /// @notice Receives protocol fees and contribution records.
    IRewardPool public immutable rewardPool;

    /// @notice Protocol fee in basis points of each settled amount.
    uint16 public feeBps;
    /// @notice Seconds between a withdrawal request and its execution.
    uint64 public withdrawDelay;

    /// @notice Buyers' deposits.
    mapping(address buyer => uint256) public balanceOf;
    /// @notice Buyers' pending withdrawals.
    mapping(address buyer => WithdrawalRequest) public withdrawals;
    /// @notice Signers allowed to countersign receipts on a buyer's behalf.
    mapping(address buyer => mapping(address signer => bool)) public isAuthorizedSigner;
    /// @notice Nodes' settled, unclaimed earnings.
    mapping(address node => uint256) public earnings;
    /// @notice Receipt keys already settled (see {receiptKey}).
    mapping(bytes32 key => bool) public settled;

    /// @notice `from` deposited `amount` for `buyer`, whose balance is now `balance`.
    event Deposited(address indexed buyer, address indexed from, uint256 amount, uint256 balance);
    /// @notice `buyer` asked to withdraw `amount`, possible from `availableAt`.
    event WithdrawalRequested(address indexed buyer, uint256 amount, uint64 availableAt);
    /// @notice `buyer` cancelled its pending withdrawal.
    event WithdrawalCancelled(address indexed buyer);
    /// @notice `buyer` withdrew `amount`.
    event Withdrawn(address indexed buyer, uint256 amount);
    /// @notice `buyer` allowed or revoked `signer` as countersigner.
    event SignerAuthorizationChanged(address indexed buyer, address indexed signer, bool authorized);
    /// @notice A receipt was settled: `buyer` paid `amount`, of which `fee` went to the reward pool.
    event ReceiptSettled(bytes32 indexed key, address indexed buyer, address indexed node, uint256 amount, uint256 fee);
    /// @notice `node` claimed `amount` of earnings.
    event EarningsClaimed(address indexed node, uint256 amount);
    /// @notice The protocol fee changed.
    event FeeChanged(uint16 feeBps);
    /// @notice The withdrawal delay changed.
    event WithdrawDelayChanged(uint64 delay);

    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice The buyer's deposit does not cover the amount.
    error InsufficientDeposit(address buyer, uint256 balance, uint256 needed);
    /// @notice The buyer has no pending withdrawal.
    error NoPendingWithdrawal();
    /// @notice The withdrawal delay has not passed.
    error WithdrawalNotReady(uint64 availableAt);
    /// @notice The fee is above {MAX_FEE_BPS}.
    error FeeTooHigh(uint16 feeBps);
    /// @notice No receipts were given.
    error EmptyBatch();
    /// @notice Receipts and signatures differ in number.
    error LengthMismatch();
    /// @notice The receipt's span is empty or reversed.
    error InvalidSpan(bytes32 key);
    /// @notice The receipt names the same account as buyer and node.
    error SelfDealing(bytes32 key);
    /// @notice The receipt expired.
    error ReceiptExpired(bytes32 key, uint64 expiry);
    /// @notice The receipt was already settled.
    error ReceiptAlreadySettled(bytes32 key);
    /// @notice The node signature does not recover to the receipt's node.
    error InvalidNodeSignature(bytes32 key);
    /// @notice The countersignature is neither the buyer's nor an authorised signer's.
    error InvalidBuyerSignature(bytes32 key, address signer);
    /// @notice The node has no earnings to claim.
    error NothingToClaim();

    /// @param token_ The payment token.
    /// @param staking_ The node registry.
    /// @param rewardPool_ The reward pool (fees and contribution).
    /// @param feeBps_ Protocol fee in basis points (at most {MAX_FEE_BPS}).
    /// @param withdrawDelay_ Seconds between a withdrawal request and its execution.
    /// @param initialOwner Manages the fee and the delay.
    constructor(
        IERC20 token_,
        INodeStaking staking_,
        IRewardPool rewardPool_,
        uint16 feeBps_,
        uint64 withdrawDelay_,
        address initialOwner
    ) Ownable(initialOwner) EIP712("inferchain", "1") {
        if (address(token_) == address(0) || address(staking_) == address(0) || address(rewardPool_) == address(0)) {
            revert ZeroAddress();
        }
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        token = token_;
        staking = staking_;
        rewardPool = rewardPool_;
        feeBps = feeBps_;
        withdrawDelay = withdrawDelay_;
        token_.forceApprove(address(rewardPool_), type(uint256).max);
    }

    // ----------------------------------------------------------------------------------------------------
    // Buyers
    // ----------------------------------------------------------------------------------------------------

    /// @notice Deposits `amount` of the caller's tokens into its own balance (needs an allowance).
    /// @dev Emits {Deposited}.
    /// @param amount Amount in token wei (> 0).
    function deposit(uint256 amount) external nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @notice Deposits `amount` of the caller's tokens into `buyer`'s balance (needs an allowance).
    /// @dev Emits {Deposited}.
    /// @param buyer The account credited.
    /// @param amount Amount in token wei (> 0).
    function depositFor(address buyer, uint256 amount) external nonReentrant {
        if (buyer == address(0)) revert ZeroAddress();
        _deposit(buyer, amount);
    }

    /// @notice Asks to withdraw `amount` after {withdrawDelay}; replaces any pending request.
    /// @dev The amount keeps paying receipts until the withdrawal executes. Emits {WithdrawalRequested}.
    /// @param amount Amount in token wei (> 0, at most the balance).
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 balance = balanceOf[msg.sender];
        if (amount > balance) revert InsufficientDeposit(msg.sender, balance, amount);
        uint64 availableAt = uint64(block.timestamp) + withdrawDelay;
        withdrawals[msg.sender] = WithdrawalRequest(amount, availableAt);
        emit WithdrawalRequested(msg.sender, amount, availableAt);
    }

    /// @notice Cancels the caller's pending withdrawal.
    /// @dev Emits {WithdrawalCancelled}.
    function cancelWithdrawal() external {
        if (withdrawals[msg.sender].amount == 0) revert NoPendingWithdrawal();
        delete withdrawals[msg.sender];
        emit WithdrawalCancelled(msg.sender);
    }

    /// @notice Executes the caller's pending withdrawal once the delay has passed.
    /// @dev Pays the requested amount, or what is left of the balance if settlements spent some of it.
    ///      Emits {Withdrawn}.
    /// @return amount Amount transferred.
    function withdraw() external nonReentrant returns (uint256 amount) {
        WithdrawalRequest memory request = withdrawals[msg.sender];
        if (request.amount == 0) revert NoPendingWithdrawal();
        if (block.timestamp < request.availableAt) revert WithdrawalNotReady(request.availableAt);
        uint256 balance = balanceOf[msg.sender];
        amount = request.amount < balance ? request.amount : balance;
        delete withdrawals[msg.sender];
        balanceOf[msg.sender] = balance - amount;
        emit Withdrawn(msg.sender, amount);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    /// @notice Allows or revokes `signer` to countersign receipts paid from the caller's deposit.
    /// @dev Emits {SignerAuthorizationChanged}.
    /// @param signer E.g. a reseller's hot key.
    /// @param authorized True to allow, false to revoke.
    function setSignerAuthorization(address signer, bool authorized) external {
        if (signer == address(0)) revert ZeroAddress();
        isAuthorizedSigner[msg.sender][signer] = authorized;
        emit SignerAuthorizationChanged(msg.sender, signer, authorized);
    }

    // ----------------------------------------------------------------------------------------------------
    // Settlement
    // ----------------------------------------------------------------------------------------------------

    /// @notice Settles one receipt: pays the node from the buyer's deposit and the fee to the reward pool.
    /// @dev Anyone may submit. Emits {ReceiptSettled}.
    /// @param r The receipt.
    /// @param nodeSig The node's EIP-712 signature of `r`.
    /// @param buyerSig The buyer's (or an authorised signer's) EIP-712 signature of `r`.
    function settle(Receipt calldata r, bytes calldata nodeSig, bytes calldata buyerSig) external nonReentrant {
        Batch memory b;
        _settleOne(r, nodeSig, buyerSig, b);
        _finish(b);
    }

    /// @notice Settles many receipts atomically (any invalid receipt reverts the whole batch, naming its key).
    /// @dev The loop is bounded by the caller's own batch. Receipts grouped by buyer and by node cost less
    ///      gas. Simulate with eth_call first to drop receipts that would revert. Emits {ReceiptSettled} per
    ///      receipt.
    /// @param receipts The receipts.
    /// @param nodeSigs `nodeSigs[i]` is the node's signature of `receipts[i]`.
    /// @param buyerSigs `buyerSigs[i]` is the buyer's (or an authorised signer's) signature of `receipts[i]`.
    function settleBatch(
        Receipt[] calldata receipts,
        bytes[] calldata nodeSigs,
        bytes[] calldata buyerSigs
    ) external nonReentrant {
        uint256 count = receipts.length;
        if (count == 0) revert EmptyBatch();
        if (nodeSigs.length != count || buyerSigs.length != count) revert LengthMismatch();
        Batch memory b;
        for (uint256 i = 0; i < count; ++i) {
            _settleOne(receipts[i], nodeSigs[i], buyerSigs[i], b);
        }
        _finish(b);
    }

    /// @notice Transfers the caller's settled earnings to it.
    /// @dev Emits {EarningsClaimed}.
    /// @return amount Amount transferred.
    function claimEarnings() external nonReentrant returns (uint256 amount) {
        amount = earnings[msg.sender];
        if (amount == 0) revert NothingToClaim();
        earnings[msg.sender] = 0;
        emit EarningsClaimed(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IReceiptVerifier
    function receiptDigest(Receipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(r.structHash());
    }

    /// @notice Replay-protection key of `r`: keccak256(sessionId, node, spanStart, spanEnd).
    /// @param r The receipt.
    function receiptKey(Receipt calldata r) external pure returns (bytes32) {
        return r.key();
    }

    /// @notice What settling `r` would move, at the current fee.
    /// @param r The receipt.
    /// @return amount Paid by the buyer.
    /// @return fee Part of `amount` that funds the reward pool.
    /// @return contribution Tokens x layers credited to the node.
    function quote(Receipt calldata r) external view returns (uint256 amount, uint256 fee, uint256 contribution) {
        amount = r.amountOwed();
        fee = (amount * feeBps) / 10_000;
        contribution = r.contribution();
    }

    function _settleOne(Receipt calldata r, bytes calldata nodeSig, bytes calldata buyerSig, Batch memory b) private {
        bytes32 key = r.key();
        address buyer = r.buyer;
        address node = r.node;
        if (r.spanEnd <= r.spanStart) revert InvalidSpan(key);
        if (buyer == node) revert SelfDealing(key);
        if (block.timestamp > r.expiry) revert ReceiptExpired(key, r.expiry);
        if (settled[key]) revert ReceiptAlreadySettled(key);

        bytes32 digest = receiptDigest(r);
        // tryRecover yields address(0) for a malformed signature: never accept it, even for a zero party.
        (address nodeSigner, , ) = ECDSA.tryRecover(digest, nodeSig);
        if (nodeSigner == address(0) || nodeSigner != node) revert InvalidNodeSignature(key);
        (address buyerSigner, , ) = ECDSA.tryRecover(digest, buyerSig);
        if (buyerSigner == address(0) || (buyerSigner != buyer && !isAuthorizedSigner[buyer][buyerSigner])) {
            revert InvalidBuyerSignature(key, buyerSigner);
        }

        settled[key] = true;
        uint256 contribution = r.contribution();
        uint256 amount = (contribution * r.pricePer1k) / 1000;
        uint256 fee = (amount * feeBps) / 10_000;

        if (buyer != b.buyer) {
            _flushBuyer(b);
            b.buyer = buyer;
            b.buyerBalance = balanceOf[buyer];
        }
        if (amount > b.buyerBalance) revert InsufficientDeposit(buyer, b.buyerBalance, amount);
        b.buyerBalance -= amount;

        if (node != b.node) {
            _flushNode(b);
            b.node = node;
        }
        b.nodeEarned += amount - fee;
        b.nodeContribution += contribution;
        b.fees += fee;
        emit ReceiptSettled(key, buyer, node, amount, fee);
    }

    function _flushBuyer(Batch memory b) private {
        if (b.buyer != address(0)) balanceOf[b.buyer] = b.buyerBalance;
    }

    function _flushNode(Batch memory b) private {
        address node = b.node;
        if (node == address(0)) return;
        if (b.nodeEarned != 0) earnings[node] += b.nodeEarned;
        uint256 contribution = b.nodeContribution;
        b.nodeEarned = 0;
        b.nodeContribution = 0;
        if (contribution != 0 && staking.isRoutable(node)) rewardPool.recordContribution(node, contribution);
    }

    function _finish(Batch memory b) private {
        _flushBuyer(b);
        _flushNode(b);
        if (b.fees != 0) rewardPool.fund(b.fees);
    }

    function _deposit(address buyer, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        uint256 balance = balanceOf[buyer] + amount;
        balanceOf[buyer] = balance;
        emit Deposited(buyer, msg.sender, amount, balance);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    // ----------------------------------------------------------------------------------------------------
    // Governance (owner)
    // ----------------------------------------------------------------------------------------------------

    /// @notice Sets the protocol fee.
    /// @dev Only the owner. Emits {FeeChanged}.
    /// @param newFeeBps Basis points (at most {MAX_FEE_BPS}).
    function setFeeBps(uint16 newFeeBps) external onlyOwner {
        if (newFeeBps > MAX_FEE_BPS) revert FeeTooHigh(newFeeBps);
        feeBps = newFeeBps;
        emit FeeChanged(newFeeBps);
    }

    /// @notice Sets the withdrawal delay for future requests.
    /// @dev Only the owner. Emits {WithdrawDelayChanged}.
    /// @param delay Seconds.
    function setWithdrawDelay(uint64 delay) external onlyOwner {
        withdrawDelay = delay;
        emit WithdrawDelayChanged(delay);
    }
}
