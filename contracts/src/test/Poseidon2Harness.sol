// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Poseidon2} from "../Poseidon2.sol";

/// @title Poseidon2Harness: exposes the Poseidon2 library to the Go tests
/// (vectors against package zkhash, and its gas). Deployed by tests only.
contract Poseidon2Harness {
    function permute(uint256 a, uint256 b, uint256 c) external pure returns (uint256, uint256, uint256) {
        return Poseidon2.permute(a, b, c);
    }

    function commitment(uint256 s) external pure returns (uint256) {
        return Poseidon2.commitment(s);
    }

    function tag(uint256 s, uint256 provider) external pure returns (uint256) {
        return Poseidon2.tag(s, provider);
    }

    function viewerCommitment(uint256 v) external pure returns (uint256) {
        return Poseidon2.viewerCommitment(v);
    }

    function grant(uint256 cv, uint256 tagValue, uint256 k) external pure returns (uint256) {
        return Poseidon2.grant(cv, tagValue, k);
    }

    function node(uint256 left, uint256 right) external pure returns (uint256) {
        return Poseidon2.node(left, right);
    }

    /// @notice Gas of one node hash, measured inside the EVM (no call overhead).
    function nodeGas(uint256 left, uint256 right) external view returns (uint256 gasUsed) {
        uint256 before = gasleft();
        Poseidon2.node(left, right);
        gasUsed = before - gasleft();
    }
}
