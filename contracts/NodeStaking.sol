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

/// @notice A validator's signed judgement of one session a node served (EIP-712 type `Verdict`, signed in
///         the domain {name: "inferchain", version: "1", chainId, verifyingContract: the NodeStaking}).
/// @param node The judged node.
/// @param sessionId The re-executed session.
/// @param guilty True when the node's committed activations did not match the re-execution.
/// @param evidenceHash Hash of the validator's evidence (inputs, expected and observed activations).
/// @param deadline Unix time after which the verdict can no longer be used.
struct Verdict {
    address node;
    bytes32 sessionId;
    bool guilty;
    bytes32 evidenceHash;
    uint64 deadline;
}

/// @title NodeStaking
/// @notice Node registry, stake, unbonding and slashing.
/// @dev A node registers with a metadata hash, stakes INFER, and is routable while it holds at least
///      `minStake` and is not jailed. Unstaking goes through an unbonding delay during which the stake can
///      still be slashed. Slashing takes `slashBps` of everything the node has bonded (stake first, then
///      unbonding), pays `reporterShareBps` of it to whoever submitted the proof and funds the reward pool
///      with the rest, and jails the node for `jailDuration`. Two proofs slash:
///      (a) equivocation: two different receipts signed by the node for the same session and span;
///      (b) a quorum of `quorum` distinct validators (set by the owner) signing the same guilty verdict.
///      Each offence (session and span for (a), session for (b)) slashes at most once.
contract NodeStaking is INodeStaking, Ownable, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice A registered node's bookkeeping.
    /// @param registered Whether the node registered.
    /// @param metadataHash Hash of the node's off-chain metadata (peer id, endpoints, hardware, ...).
    /// @param stake Bonded stake (slashable, counts toward routability).
    /// @param unbonding Stake on its way out (slashable, not routable).
    /// @param unbondingReadyAt When `unbonding` can be withdrawn.
    /// @param jailedUntil Not routable and cannot withdraw before this time.
    /// @param slashed Total ever slashed from this node.
    struct Node {
        bool registered;
        bytes32 metadataHash;
        uint256 stake;
        uint256 unbonding;
        uint64 unbondingReadyAt;
        uint64 jailedUntil;
        uint256 slashed;
    }

    /// @dev EIP-712 type hash of {Verdict}; see inferchain/wallet/verdicts.py.
    bytes32 public constant VERDICT_TYPEHASH =
        keccak256("Verdict(address node,bytes32 sessionId,bool guilty,bytes32 evidenceHash,uint64 deadline)");
    /// @notice Upper bound of any basis-point parameter.
    uint16 public constant MAX_BPS = 10_000;

    /// @notice The staking token (INFER).
    IERC20 public immutable token;
    /// @notice Where the non-reporter part of slashed stake goes.
    IRewardPool public immutable rewardPool;
    /// @notice The contract whose EIP-712 domain receipts are signed in (PaymentEscrow).
    IReceiptVerifier public receiptVerifier;

    /// @notice Stake required to be routable.
    uint256 public minStake;
    /// @notice Seconds between an unbond request and the withdrawal.
    uint64 public unbondingDelay;
    /// @notice Seconds a slashed node stays jailed.
    uint64 public jailDuration;
    /// @notice Share of a node's bonded stake taken by one slash, in basis points.
    uint16 public slashBps;
    /// @notice Share of the slashed amount paid to the reporter, in basis points; the rest funds the pool.
    uint16 public reporterShareBps;

    /// @notice Number of distinct validator signatures needed to slash by verdict.
    uint32 public quorum;
    /// @notice Number of validators in the set.
    uint32 public validatorCount;
    /// @notice Whether an account is a validator.
    mapping(address account => bool) public isValidator;

    /// @notice Per-node bookkeeping.
    mapping(address node => Node) public nodes;
    /// @notice Offences already slashed (see {equivocationOffence} and {verdictOffence}).
    mapping(bytes32 offence => bool) public offenceSlashed;

    /// @notice `node` registered with `metadataHash`.
    event NodeRegistered(address indexed node, bytes32 metadataHash);
    /// @notice `node` changed its metadata hash.
    event MetadataUpdated(address indexed node, bytes32 metadataHash);
    /// @notice `node` added `amount` stake; its stake is now `totalStake`.
    event Staked(address indexed node, uint256 amount, uint256 totalStake);
    /// @notice `node` moved `amount` stake to unbonding, withdrawable at `readyAt`.
    event UnbondRequested(address indexed node, uint256 amount, uint256 totalUnbonding, uint64 readyAt);
    /// @notice `node` withdrew `amount` unbonded stake.
    event Withdrawn(address indexed node, uint256 amount);
    /// @notice `node` lost `amount` for `offence`; `reporter` got `reporterReward`, the pool `poolShare`.
    event Slashed(
        address indexed node,
        bytes32 indexed offence,
        address indexed reporter,
        uint256 amount,
        uint256 reporterReward,
        uint256 poolShare
    );
    /// @notice `node` is jailed until `until`.
    event Jailed(address indexed node, uint64 until);
    /// @notice `account` joined the validator set.
    event ValidatorAdded(address indexed account);
    /// @notice `account` left the validator set.
    event ValidatorRemoved(address indexed account);
    /// @notice The verdict quorum changed.
    event QuorumChanged(uint32 quorum);
    /// @notice The minimum routable stake changed.
    event MinStakeChanged(uint256 minStake);
    /// @notice The unbonding delay changed.
    event UnbondingDelayChanged(uint64 delay);
    /// @notice The jail duration changed.
    event JailDurationChanged(uint64 duration);
    /// @notice The slash fraction or the reporter's share changed.
    event SlashingChanged(uint16 slashBps, uint16 reporterShareBps);
    /// @notice The receipt verifier (escrow) changed.
    event ReceiptVerifierChanged(address indexed previousVerifier, address indexed newVerifier);

    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice The caller is already registered.
    error AlreadyRegistered(address node);
    /// @notice The account is not a registered node.
    error NotRegistered(address node);
    /// @notice Unbonding more than the stake.
    error InsufficientStake(uint256 available, uint256 requested);
    /// @notice Nothing is unbonding.
    error NothingToWithdraw();
    /// @notice The unbonding delay has not passed.
    error UnbondingNotReady(uint64 readyAt);
    /// @notice The node is jailed.
    error NodeJailed(uint64 until);
    /// @notice A basis-point parameter is above 10000.
    error InvalidBps(uint256 bps);
    /// @notice The quorum is zero or larger than the validator set.
    error InvalidQuorum(uint256 quorum, uint256 validatorCount);
    /// @notice The account is already a validator.
    error AlreadyValidator(address account);
    /// @notice The account is not a validator.
    error NotValidator(address account);
    /// @notice No receipt verifier is set yet.
    error ReceiptVerifierNotSet();
    /// @notice The two receipts are not about the same node, session and span.
    error ReceiptsNotComparable();
    /// @notice The two receipts are identical: no conflict.
    error ReceiptsDoNotConflict();
    /// @notice A receipt signature is not the node's.
    error InvalidNodeSignature(address recovered);
    /// @notice The offence was already slashed.
    error AlreadySlashed(bytes32 offence);
    /// @notice The verdict does not declare the node guilty.
    error VerdictNotGuilty();
    /// @notice The verdict's deadline has passed.
    error VerdictExpired(uint64 deadline);
    /// @notice No quorum is set (no validators yet), so verdicts cannot slash.
    error VerdictSlashingDisabled();
    /// @notice Fewer signatures than the quorum.
    error QuorumNotReached(uint256 signatures, uint256 quorum);
    /// @notice A verdict signer is not a validator.
    error SignerNotValidator(address signer);
    /// @notice Verdict signers must be strictly ascending (this rejects duplicates).
    error SignersNotAscending(address signer);

    /// @param token_ The staking token.
    /// @param rewardPool_ Receives the non-reporter part of slashed stake.
    /// @param minStake_ Stake required to be routable.
    /// @param unbondingDelay_ Seconds between unbond request and withdrawal.
    /// @param initialOwner Manages parameters and the validator set.
    constructor(
        IERC20 token_,
        IRewardPool rewardPool_,
        uint256 minStake_,
        uint64 unbondingDelay_,
        address initialOwner
    ) Ownable(initialOwner) EIP712("inferchain", "1") {
        if (address(token_) == address(0) || address(rewardPool_) == address(0)) revert ZeroAddress();
        token = token_;
        rewardPool = rewardPool_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        jailDuration = 7 days;
        slashBps = 5_000;
        reporterShareBps = 5_000;
        token_.forceApprove(address(rewardPool_), type(uint256).max);
    }

    // ----------------------------------------------------------------------------------------------------
    // Node lifecycle
    // ----------------------------------------------------------------------------------------------------

    /// @notice Registers the caller as a node.
    /// @dev Emits {NodeRegistered}.
    /// @param metadataHash Hash of the node's off-chain metadata.
    function register(bytes32 metadataHash) external {
        Node storage n = nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered(msg.sender);
        n.registered = true;
        n.metadataHash = metadataHash;
        emit NodeRegistered(msg.sender, metadataHash);
    }

    /// @notice Replaces the caller's metadata hash.
    /// @dev Emits {MetadataUpdated}.
    /// @param metadataHash New hash.
    function updateMetadata(bytes32 metadataHash) external {
        Node storage n = _registered(msg.sender);
        n.metadataHash = metadataHash;
        emit MetadataUpdated(msg.sender, metadataHash);
    }

    /// @notice Adds `amount` of the caller's tokens to its stake (needs an allowance).
    /// @dev Emits {Staked}.
    /// @param amount Amount in token wei (> 0).
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Node storage n = _registered(msg.sender);
        n.stake += amount;
        emit Staked(msg.sender, amount, n.stake);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Moves `amount` of the caller's stake to unbonding; restarts the unbonding timer.
    /// @dev Unbonding stake stays slashable until withdrawn. Emits {UnbondRequested}.
    /// @param amount Amount in token wei (> 0, at most the stake).
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Node storage n = _registered(msg.sender);
        if (amount > n.stake) revert InsufficientStake(n.stake, amount);
        n.stake -= amount;
        n.unbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        n.unbondingReadyAt = readyAt;
        emit UnbondRequested(msg.sender, amount, n.unbonding, readyAt);
    }

    /// @notice Withdraws the caller's unbonded stake once the delay has passed and the node is not jailed.
    /// @dev Emits {Withdrawn}.
    function withdraw() external nonReentrant {
        Node storage n = nodes[msg.sender];
        uint256 amount = n.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < n.unbondingReadyAt) revert UnbondingNotReady(n.unbondingReadyAt);
        if (block.timestamp < n.jailedUntil) revert NodeJailed(n.jailedUntil);
        n.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc INodeStaking
    function isRoutable(address node) external view returns (bool) {
        Node storage n = nodes[node];
        return n.registered && n.stake >= minStake && block.timestamp >= n.jailedUntil;
    }

    /// @notice Whether `node` is jailed now.
    /// @param node The node.
    function isJailed(address node) external view returns (bool) {
        return block.timestamp < nodes[node].jailedUntil;
    }

    // ----------------------------------------------------------------------------------------------------
    // Slashing
    // ----------------------------------------------------------------------------------------------------

    /// @notice Offence id of an equivocation: one per node, session and span.
    /// @param node The node.
    /// @param sessionId The session.
    /// @param spanStart First layer of the span.
    /// @param spanEnd Layer after the span.
    function equivocationOffence(
        address node,
        bytes32 sessionId,
        uint32 spanStart,
        uint32 spanEnd
    ) public pure returns (bytes32) {
        return keccak256(abi.encode("equivocation", node, sessionId, spanStart, spanEnd));
    }

    /// @notice Offence id of a verdict slash: one per node and session.
    /// @param node The node.
    /// @param sessionId The session.
    function verdictOffence(address node, bytes32 sessionId) public pure returns (bytes32) {
        return keccak256(abi.encode("verdict", node, sessionId));
    }

    /// @notice EIP-712 digest of `v` in this contract's domain: what validators sign.
    /// @param v The verdict.
    function verdictDigest(Verdict calldata v) public view returns (bytes32) {
        return
            _hashTypedDataV4(
                keccak256(abi.encode(VERDICT_TYPEHASH, v.node, v.sessionId, v.guilty, v.evidenceHash, v.deadline))
            );
    }

    /// @notice Slashes a node that signed two different receipts for the same session and span.
    /// @dev Anyone may report; the reporter receives `reporterShareBps` of the slashed amount. Emits
    ///      {Slashed} and {Jailed}.
    /// @param a One receipt.
    /// @param sigA The node's signature of `a`.
    /// @param b A different receipt with the same node, session and span.
    /// @param sigB The node's signature of `b`.
    function reportEquivocation(
        Receipt calldata a,
        bytes calldata sigA,
        Receipt calldata b,
        bytes calldata sigB
    ) external nonReentrant {
        if (a.node != b.node || a.sessionId != b.sessionId || a.spanStart != b.spanStart || a.spanEnd != b.spanEnd) {
            revert ReceiptsNotComparable();
        }
        _checkConflict(a, sigA, b, sigB);
        _slash(a.node, equivocationOffence(a.node, a.sessionId, a.spanStart, a.spanEnd));
    }

    /// @notice Slashes a node found guilty by a quorum of validators.
    /// @dev `signatures` must come from at least `quorum` distinct validators, ordered by ascending signer
    ///      address. The caller is paid the reporter share. Emits {Slashed} and {Jailed}.
    /// @param v The guilty verdict every signature signs.
    /// @param signatures Validator signatures of {verdictDigest}(v).
    function slashByVerdicts(Verdict calldata v, bytes[] calldata signatures) external nonReentrant {
        if (!v.guilty) revert VerdictNotGuilty();
        if (block.timestamp > v.deadline) revert VerdictExpired(v.deadline);
        uint256 needed = quorum;
        if (needed == 0) revert VerdictSlashingDisabled();
        if (signatures.length < needed) revert QuorumNotReached(signatures.length, needed);
        bytes32 digest = verdictDigest(v);
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; ++i) {
            (address signer, , ) = ECDSA.tryRecover(digest, signatures[i]);
            if (!isValidator[signer]) revert SignerNotValidator(signer);
            if (signer <= previous) revert SignersNotAscending(signer);
            previous = signer;
        }
        _slash(v.node, verdictOffence(v.node, v.sessionId));
    }

    function _checkConflict(
        Receipt calldata a,
        bytes calldata sigA,
        Receipt calldata b,
        bytes calldata sigB
    ) private view {
        IReceiptVerifier verifier = receiptVerifier;
        if (address(verifier) == address(0)) revert ReceiptVerifierNotSet();
        bytes32 digestA = verifier.receiptDigest(a);
        bytes32 digestB = verifier.receiptDigest(b);
        if (digestA == digestB) revert ReceiptsDoNotConflict();
        // tryRecover yields address(0) for a malformed signature: never accept it.
        (address signerA, , ) = ECDSA.tryRecover(digestA, sigA);
        if (signerA == address(0) || signerA != a.node) revert InvalidNodeSignature(signerA);
        (address signerB, , ) = ECDSA.tryRecover(digestB, sigB);
        if (signerB == address(0) || signerB != a.node) revert InvalidNodeSignature(signerB);
    }

    function _slash(address node, bytes32 offence) private {
        if (offenceSlashed[offence]) revert AlreadySlashed(offence);
        Node storage n = _registered(node);
        offenceSlashed[offence] = true;

        uint256 bonded = n.stake + n.unbonding;
        uint256 amount = (bonded * slashBps) / MAX_BPS;
        uint256 fromStake = amount <= n.stake ? amount : n.stake;
        n.stake -= fromStake;
        n.unbonding -= amount - fromStake;
        n.slashed += amount;
        uint64 until = uint64(block.timestamp) + jailDuration;
        if (until > n.jailedUntil) n.jailedUntil = until;

        uint256 reporterReward = (amount * reporterShareBps) / MAX_BPS;
        uint256 poolShare = amount - reporterReward;
        emit Slashed(node, offence, msg.sender, amount, reporterReward, poolShare);
        emit Jailed(node, n.jailedUntil);

        if (reporterReward != 0) token.safeTransfer(msg.sender, reporterReward);
        if (poolShare != 0) rewardPool.fund(poolShare);
    }

    function _registered(address node) private view returns (Node storage n) {
        n = nodes[node];
        if (!n.registered) revert NotRegistered(node);
    }

    // ----------------------------------------------------------------------------------------------------
    // Governance (owner)
    // ----------------------------------------------------------------------------------------------------

    /// @notice Adds `account` to the validator set.
    /// @dev Only the owner. Emits {ValidatorAdded}.
    /// @param account The validator's signing address.
    function addValidator(address account) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        if (isValidator[account]) revert AlreadyValidator(account);
        isValidator[account] = true;
        validatorCount += 1;
        emit ValidatorAdded(account);
    }

    /// @notice Removes `account` from the validator set; the quorum must stay reachable.
    /// @dev Only the owner. Emits {ValidatorRemoved}.
    /// @param account The validator to remove.
    function removeValidator(address account) external onlyOwner {
        if (!isValidator[account]) revert NotValidator(account);
        if (quorum > validatorCount - 1) revert InvalidQuorum(quorum, validatorCount - 1);
        isValidator[account] = false;
        validatorCount -= 1;
        emit ValidatorRemoved(account);
    }

    /// @notice Sets the number of validator signatures needed to slash by verdict (1..validatorCount).
    /// @dev Only the owner. Emits {QuorumChanged}.
    /// @param newQuorum The M of M-of-N.
    function setQuorum(uint32 newQuorum) external onlyOwner {
        if (newQuorum == 0 || newQuorum > validatorCount) revert InvalidQuorum(newQuorum, validatorCount);
        quorum = newQuorum;
        emit QuorumChanged(newQuorum);
    }

    /// @notice Sets the stake required to be routable.
    /// @dev Only the owner. Emits {MinStakeChanged}.
    /// @param newMinStake Amount in token wei.
    function setMinStake(uint256 newMinStake) external onlyOwner {
        minStake = newMinStake;
        emit MinStakeChanged(newMinStake);
    }

    /// @notice Sets the unbonding delay for future unbond requests.
    /// @dev Only the owner. Emits {UnbondingDelayChanged}.
    /// @param delay Seconds.
    function setUnbondingDelay(uint64 delay) external onlyOwner {
        unbondingDelay = delay;
        emit UnbondingDelayChanged(delay);
    }

    /// @notice Sets how long a slashed node stays jailed.
    /// @dev Only the owner. Emits {JailDurationChanged}.
    /// @param duration Seconds.
    function setJailDuration(uint64 duration) external onlyOwner {
        jailDuration = duration;
        emit JailDurationChanged(duration);
    }

    /// @notice Sets the slash fraction and the reporter's share of it.
    /// @dev Only the owner. Emits {SlashingChanged}.
    /// @param newSlashBps Share of bonded stake taken per slash (basis points).
    /// @param newReporterShareBps Share of the slashed amount paid to the reporter (basis points).
    function setSlashing(uint16 newSlashBps, uint16 newReporterShareBps) external onlyOwner {
        if (newSlashBps > MAX_BPS) revert InvalidBps(newSlashBps);
        if (newReporterShareBps > MAX_BPS) revert InvalidBps(newReporterShareBps);
        slashBps = newSlashBps;
        reporterShareBps = newReporterShareBps;
        emit SlashingChanged(newSlashBps, newReporterShareBps);
    }

    /// @notice Sets the contract in whose EIP-712 domain receipts are signed (the PaymentEscrow).
    /// @dev Only the owner. Emits {ReceiptVerifierChanged}.
    /// @param verifier The escrow.
    function setReceiptVerifier(IReceiptVerifier verifier) external onlyOwner {
        if (address(verifier) == address(0)) revert ZeroAddress();
        emit ReceiptVerifierChanged(address(receiptVerifier), address(verifier));
        receiptVerifier = verifier;
    }
}
