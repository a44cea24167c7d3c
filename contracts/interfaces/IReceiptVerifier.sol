// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Receipt} from "../libraries/Receipts.sol";

/// @title IReceiptVerifier
/// @notice The contract whose EIP-712 domain receipts are signed in (the PaymentEscrow).
interface IReceiptVerifier {
    /// @notice EIP-712 digest of `r` in this contract's domain: what node and buyer sign.
    function receiptDigest(Receipt calldata r) external view returns (bytes32);
}
