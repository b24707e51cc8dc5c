// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AgentRegistry} from "./AgentRegistry.sol";
import {Constants, MERKLE_DEPTH} from "./Constants.sol";
import {Poseidon2} from "./Poseidon2.sol";

/// @title PatientRegistry: the anonymity set of MedRec-ZK.
/// @notice An incremental Merkle tree (depth 20, node = H(D_node; left, right), empty
/// leaf 0) of identity commitments C = H(D_commit; s). An active provider's gateway
/// inserts a commitment when it enrols a patient (once per patient, at any provider).
/// An Ownership proof shows membership of the prover's commitment under a known root
/// without saying which leaf is theirs: every enrolled patient is a candidate.
/// @dev Known roots: the current root, and every earlier root for ROOT_TTL after it was
/// replaced, so a proof made just before another enrolment still verifies. This is the
/// "ring of recent roots" of the design, bounded by time rather than by count, checked
/// with one storage read instead of a scan.
contract PatientRegistry {
    struct RootInfo {
        bool known;
        uint64 supersededAt;
    }

    /// @notice How long a replaced root stays valid for proofs.
    uint256 public constant ROOT_TTL = 1 hours;

    AgentRegistry public immutable agents;

    /// @notice The current root of the tree.
    uint256 public root;
    /// @notice The number of enrolled commitments (the next leaf index).
    uint32 public size;

    uint256[MERKLE_DEPTH] private _filled;
    mapping(uint256 root => RootInfo) private _roots;
    mapping(uint256 commitment => bool) public enrolled;

    event Enrolled(uint256 indexed commitment, uint32 index, uint256 root, uint32 indexed provider);

    error NotActiveProvider(address caller);
    error InvalidCommitment(uint256 commitment);
    error AlreadyEnrolled(uint256 commitment);
    error TreeFull();

    constructor(AgentRegistry agents_) {
        agents = agents_;
        for (uint256 h = 0; h < Constants.TREE_DEPTH; h++) {
            _filled[h] = Constants.zero(h);
        }
        root = Constants.zero(Constants.TREE_DEPTH);
    }

    /// @notice Insert a patient's identity commitment. Only an active provider's gateway may.
    function enrol(uint256 commitment) external returns (uint32 index) {
        uint32 provider = agents.activeGateway(msg.sender);
        if (provider == 0) revert NotActiveProvider(msg.sender);
        if (commitment == 0 || commitment >= Constants.FIELD_MODULUS) revert InvalidCommitment(commitment);
        if (enrolled[commitment]) revert AlreadyEnrolled(commitment);
        index = size;
        if (index >= 1 << Constants.TREE_DEPTH) revert TreeFull();
        enrolled[commitment] = true;

        uint256 node = commitment;
        uint256 i = index;
        for (uint256 h = 0; h < Constants.TREE_DEPTH; h++) {
            if (i & 1 == 0) {
                _filled[h] = node;
                node = Poseidon2.node(node, Constants.zero(h));
            } else {
                node = Poseidon2.node(_filled[h], node);
            }
            i >>= 1;
        }

        if (index > 0) _roots[root].supersededAt = uint64(block.timestamp);
        _roots[node].known = true;
        root = node;
        size = index + 1;
        emit Enrolled(commitment, index, node, provider);
    }

    /// @notice Whether proofs may be made against `r`: the current root (once the tree
    /// is not empty) or a root replaced less than ROOT_TTL ago.
    function isKnownRoot(uint256 r) public view returns (bool) {
        if (r == root) return size > 0;
        RootInfo memory info = _roots[r];
        return info.known && block.timestamp <= uint256(info.supersededAt) + ROOT_TTL;
    }
}
