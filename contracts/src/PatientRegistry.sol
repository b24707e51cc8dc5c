// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AgentRegistry} from "./AgentRegistry.sol";
import {Constants, MERKLE_DEPTH} from "./Constants.sol";
import {Poseidon2} from "./Poseidon2.sol";

/// @title PatientRegistry: the anonymity set of MedRec-ZK.
/// @notice An incremental Merkle tree (depth 30, node = H(D_node; left, right), empty
/// leaf 0) of identity commitments C = H(D_commit; s). An active provider's gateway
/// inserts commitments when it enrols patients (once per patient, at any provider), in
/// batches: the commitments its desks enrolled since its last batch, in one transaction.
/// An Ownership proof shows membership of the prover's commitment under a known root
/// without saying which leaf is theirs: every enrolled patient is a candidate.
/// @dev The contract keeps the frontier (one node per level) and the roots, not the
/// leaves: the leaves are in the Enrolled events. A batch of k leaves costs about
/// k + depth hashes, the root's bookkeeping once, and its calldata and log: a small
/// part of k single insertions. There is no per-commitment record on chain (it would
/// cost more than the insertion itself): gateways refuse a commitment already in the
/// tree, and the audit reports a duplicate leaf from the events (a duplicate weakens no
/// proof; it would only inflate the anonymity set's count, which the audit corrects).
/// Known roots: the current root, and every earlier root for ROOT_TTL after it was
/// replaced, so a proof made just before another enrolment still verifies. This is the
/// "ring of recent roots" of the design, bounded by time rather than by count, checked
/// with one storage read instead of a scan. Only a batch's final root is ever a root:
/// the tree never stands at a batch's intermediate sizes.
contract PatientRegistry {
    struct RootInfo {
        bool known;
        uint64 supersededAt;
    }

    /// @notice How long a replaced root stays valid for proofs.
    uint256 public constant ROOT_TTL = 1 hours;
    /// @notice The most commitments one batch may insert (about 3.6 M gas at depth 30).
    uint256 public constant MAX_BATCH = 256;

    AgentRegistry public immutable agents;

    /// @notice The current root of the tree.
    uint256 public root;
    /// @notice The number of enrolled commitments (the next leaf index).
    uint32 public size;

    /// @dev _filled[h]: the node at height h with the highest even index that has a
    /// leaf under it (the left sibling the next odd node at that height pairs with).
    uint256[MERKLE_DEPTH] private _filled;
    mapping(uint256 root => RootInfo) private _roots;

    /// @notice commitments were inserted at leaves start, start + 1, …; root is the
    /// tree's root after them.
    event Enrolled(uint32 indexed provider, uint32 start, uint256 root, uint256[] commitments);

    error NotActiveProvider(address caller);
    error InvalidCommitment(uint256 commitment);
    error BatchSize(uint256 size);
    error TreeFull();

    constructor(AgentRegistry agents_) {
        agents = agents_;
        for (uint256 h = 0; h < Constants.TREE_DEPTH; h++) {
            _filled[h] = Constants.zero(h);
        }
        root = Constants.zero(Constants.TREE_DEPTH);
    }

    /// @notice Insert patients' identity commitments, in order, at the next leaves.
    /// Only an active provider's gateway may.
    function enrol(uint256[] calldata commitments) external returns (uint32 start) {
        uint32 provider = agents.activeGateway(msg.sender);
        if (provider == 0) revert NotActiveProvider(msg.sender);
        uint256 k = commitments.length;
        if (k == 0 || k > MAX_BATCH) revert BatchSize(k);
        start = size;
        if (uint256(start) + k > 1 << Constants.TREE_DEPTH) revert TreeFull();

        uint256[] memory level = new uint256[](k);
        for (uint256 j = 0; j < k; j++) {
            uint256 c = commitments[j];
            if (c == 0 || c >= Constants.FIELD_MODULUS) revert InvalidCommitment(c);
            level[j] = c;
        }
        // Level by level, the batch's nodes [first, last] at height h become their
        // parents, in place (parent p reads children 2p and 2p + 1, never below p).
        uint256 first = start;
        uint256 last = start + k - 1;
        for (uint256 h = 0; h < Constants.TREE_DEPTH; h++) {
            uint256 left0 = first & 1 == 1 ? _filled[h] : 0; // a left sibling before the batch
            if (last & 1 == 0) {
                _filled[h] = level[last - first];
            } else if (last > first) {
                _filled[h] = level[last - 1 - first];
            }
            uint256 zero = Constants.zero(h);
            uint256 parents = (last >> 1) - (first >> 1) + 1;
            for (uint256 p = 0; p < parents; p++) {
                uint256 li = ((first >> 1) + p) << 1; // the parent's left child
                uint256 left = li < first ? left0 : level[li - first];
                uint256 right = li + 1 > last ? zero : level[li + 1 - first];
                level[p] = Poseidon2.node(left, right);
            }
            first >>= 1;
            last >>= 1;
        }
        uint256 newRoot = level[0];

        if (start > 0) _roots[root].supersededAt = uint64(block.timestamp);
        _roots[newRoot].known = true;
        root = newRoot;
        size = uint32(start + k);
        emit Enrolled(provider, start, newRoot, commitments);
    }

    /// @notice Whether proofs may be made against `r`: the current root (once the tree
    /// is not empty) or a root replaced less than ROOT_TTL ago.
    function isKnownRoot(uint256 r) public view returns (bool) {
        if (r == root) return size > 0;
        RootInfo memory info = _roots[r];
        return info.known && block.timestamp <= uint256(info.supersededAt) + ROOT_TTL;
    }
}
