// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice A node's signed statement of work served for one inference session.
/// @dev EIP-712 type `Receipt`, signed in the domain {name: "inferchain", version: "1", chainId,
///      verifyingContract: the PaymentEscrow}. The Python twin lives in inferchain/wallet/receipts.py; the
///      field order and types here and there must stay identical.
/// @param sessionId Random id of the inference session (chosen by the client).
/// @param buyer Account whose escrow deposit pays for the work.
/// @param node Wallet of the node that served the span.
/// @param modelId Content hash of the model (config + weights).
/// @param spanStart First layer served (inclusive).
/// @param spanEnd Last layer served (exclusive); the span has `spanEnd - spanStart` layers.
/// @param tokensIn Prompt tokens that went through the span.
/// @param tokensOut Generated tokens that went through the span.
/// @param pricePer1k Price in token wei per 1000 tokens per layer served.
/// @param activationCommitment Commitment to the activations the node produced (checked by validators).
/// @param expiry Unix time after which the receipt can no longer be settled.
struct Receipt {
    bytes32 sessionId;
    address buyer;
    address node;
    bytes32 modelId;
    uint32 spanStart;
    uint32 spanEnd;
    uint64 tokensIn;
    uint64 tokensOut;
    uint256 pricePer1k;
    bytes32 activationCommitment;
    uint64 expiry;
}

/// @title Receipts
/// @notice Hashing and arithmetic of {Receipt}, shared by the escrow (settlement) and the staking contract
///         (equivocation proofs).
library Receipts {
    /// @dev keccak256 of the EIP-712 type string; see inferchain/wallet/receipts.py for the same string.
    bytes32 internal constant TYPEHASH =
        keccak256(
            "Receipt(bytes32 sessionId,address buyer,address node,bytes32 modelId,uint32 spanStart,uint32 spanEnd,"
            "uint64 tokensIn,uint64 tokensOut,uint256 pricePer1k,bytes32 activationCommitment,uint64 expiry)"
        );

    /// @notice EIP-712 struct hash of `r` (to be wrapped by the escrow's domain separator).
    function structHash(Receipt calldata r) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                TYPEHASH,
                r.sessionId,
                r.buyer,
                r.node,
                r.modelId,
                r.spanStart,
                r.spanEnd,
                r.tokensIn,
                r.tokensOut,
                r.pricePer1k,
                r.activationCommitment,
                r.expiry
            )
        );
    }

    /// @notice Identity of the work a receipt is about: one session, one node, one span.
    /// @dev Used for replay protection (one settlement per key) and for equivocation (two different signed
    ///      receipts with the same key).
    function key(Receipt calldata r) internal pure returns (bytes32) {
        return keccak256(abi.encode(r.sessionId, r.node, r.spanStart, r.spanEnd));
    }

    /// @notice Layers served times tokens processed: the unit of reward contribution.
    function contribution(Receipt calldata r) internal pure returns (uint256) {
        return (uint256(r.tokensIn) + uint256(r.tokensOut)) * (uint256(r.spanEnd) - uint256(r.spanStart));
    }

    /// @notice Amount the buyer owes the node for `r`, in token wei (rounded down).
    function amountOwed(Receipt calldata r) internal pure returns (uint256) {
        return (contribution(r) * r.pricePer1k) / 1000;
    }
}
