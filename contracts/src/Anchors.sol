// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AgentRegistry} from "./AgentRegistry.sol";

/// @title Anchors: providers' periodic commitments to their access logs and records.
/// @notice A provider's gateway anchors, per batch, the Merkle root of its access-log
/// entries [fromSeq, fromSeq + count) (contiguous with the previous batch) and the root of its
/// records state (tag → hash of that patient's record set). Patients check their log
/// entries and record sets against these roots, so a provider cannot silently rewrite
/// history. Batches are per provider and never per patient: a per-tag event would tell
/// every authority when each pseudonymous patient visits.
contract Anchors {
    struct Latest {
        uint64 batches;
        uint64 nextSeq;
    }

    AgentRegistry public immutable agents;

    mapping(uint32 provider => Latest) public latest;
    /// @notice keccak256(abi.encode(logRoot, fromSeq, count, stateRoot)) of each batch.
    mapping(uint32 provider => mapping(uint64 batch => bytes32)) public batchHash;

    event Anchored(
        uint32 indexed provider, uint64 indexed batch, bytes32 logRoot, uint64 fromSeq, uint64 count, bytes32 stateRoot
    );

    error NotActiveProvider(address caller);
    error NonContiguous(uint64 expectedFrom, uint64 gotFrom);
    error EmptyBatch();
    error LogRootWithoutEntries();
    error RepeatedBatch(uint64 batch);

    constructor(AgentRegistry agents_) {
        agents = agents_;
    }

    /// @notice Anchor a batch: `count` log entries from `fromSeq` under `logRoot` (count 0
    /// and a zero logRoot when only the records state changed) and the records-state root.
    function anchor(bytes32 logRoot, uint64 fromSeq, uint64 count, bytes32 stateRoot) external returns (uint64 batch) {
        uint32 provider = agents.activeGateway(msg.sender);
        if (provider == 0) revert NotActiveProvider(msg.sender);
        Latest storage last = latest[provider];
        if (fromSeq != last.nextSeq) revert NonContiguous(last.nextSeq, fromSeq);
        batch = last.batches;
        bytes32 h = keccak256(abi.encode(logRoot, fromSeq, count, stateRoot));
        if (count == 0) {
            if (logRoot != bytes32(0)) revert LogRootWithoutEntries();
            if (stateRoot == bytes32(0)) revert EmptyBatch();
            // A batch with entries cannot repeat (it would not be contiguous);
            // one of records only could, sent again by a gateway that crashed
            // before it saw the first mined. A new one always changes the state.
            if (batch > 0 && batchHash[provider][batch - 1] == h) revert RepeatedBatch(batch - 1);
        }
        batchHash[provider][batch] = h;
        last.batches = batch + 1;
        last.nextSeq = fromSeq + count;
        emit Anchored(provider, batch, logRoot, fromSeq, count, stateRoot);
    }
}
