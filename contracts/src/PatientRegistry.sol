// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AgentRegistry} from "./AgentRegistry.sol";
import {Constants, MERKLE_DEPTH} from "./Constants.sol";
import {Poseidon2} from "./Poseidon2.sol";

/// @notice The Groth16 verifier of circuits.Insertion (gnark's, generated from the keys).
interface IInsertionVerifier {
    function verifyProof(bytes calldata proof, uint256[6] calldata input) external view;
}

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
///
/// A registry deployed with an insertion verifier keeps no frontier: its gateways
/// insert with enrolProven, a batch of up to PROVEN_BATCH commitments and a proof
/// (circuits.Insertion) that the new root is the tree's after them. The contract
/// computes the proof's challenge from its own size and root and the list it was
/// sent, so the proof speaks of exactly this list at exactly this position; it
/// hashes nothing and stores only the root (ADR 0002). Either way, the Enrolled
/// events are the same.
contract PatientRegistry {
    struct RootInfo {
        bool known;
        uint64 supersededAt;
    }

    /// @notice How long a replaced root stays valid for proofs.
    uint256 public constant ROOT_TTL = 1 hours;
    /// @notice The most commitments one batch may insert (about 3.6 M gas at depth 30).
    uint256 public constant MAX_BATCH = 256;
    /// @notice The most commitments one proven batch inserts (circuits.InsertionSize).
    uint256 public constant PROVEN_BATCH = 128;

    AgentRegistry public immutable agents;
    /// @notice The batch-insertion verifier; zero for a registry that inserts by its
    /// frontier (enrol). Fixed at deployment: the two modes never mix.
    IInsertionVerifier public immutable insertion;
    /// @notice prover.VerifyingKeyHash of the insertion verifier's key (zero without
    /// one): what the deployer claims it carries, for auditors to check the code
    /// and the ceremony against.
    bytes32 public immutable insertionKeyHash;

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
    error ProofRequired();
    error NoInsertionVerifier();
    error InvalidRoot(uint256 root);
    error ZeroChallenge();

    constructor(AgentRegistry agents_, IInsertionVerifier insertion_, bytes32 insertionKeyHash_) {
        agents = agents_;
        insertion = insertion_;
        insertionKeyHash = insertionKeyHash_;
        if (address(insertion_) == address(0)) {
            for (uint256 h = 0; h < Constants.TREE_DEPTH; h++) {
                _filled[h] = Constants.zero(h);
            }
        }
        root = Constants.zero(Constants.TREE_DEPTH);
    }

    /// @notice Insert patients' identity commitments, in order, at the next leaves.
    /// Only an active provider's gateway may, and only in a registry without an
    /// insertion verifier.
    function enrol(uint256[] calldata commitments) external returns (uint32 start) {
        if (address(insertion) != address(0)) revert ProofRequired();
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
        _advance(provider, start, level[0], commitments);
    }

    /// @notice Insert commitments, in order, at the next leaves, with proof — a
    /// Groth16 proof of circuits.Insertion — that newRoot is the tree's root after
    /// them. Only an active provider's gateway may, in a registry with an insertion
    /// verifier. The public inputs are this registry's own root and size, newRoot,
    /// the batch's length, X = keccak256(size, root, newRoot, commitments) mod r and
    /// E = Σ commitments[i]·X^i mod r: a proof made for another list, order, position
    /// or tree does not verify.
    function enrolProven(uint256[] calldata commitments, uint256 newRoot, bytes calldata proof)
        external
        returns (uint32 start)
    {
        if (address(insertion) == address(0)) revert NoInsertionVerifier();
        uint32 provider = agents.activeGateway(msg.sender);
        if (provider == 0) revert NotActiveProvider(msg.sender);
        uint256 k = commitments.length;
        if (k == 0 || k > PROVEN_BATCH) revert BatchSize(k);
        start = size;
        // The proof covers the aligned subtree of PROVEN_BATCH leaves holding start
        // and the next one: both must be inside the tree.
        if (uint256(start) + 2 * PROVEN_BATCH > 1 << Constants.TREE_DEPTH) revert TreeFull();
        uint256 r = Constants.FIELD_MODULUS;
        if (newRoot >= r) revert InvalidRoot(newRoot);
        for (uint256 j = 0; j < k; j++) {
            uint256 c = commitments[j];
            if (c == 0 || c >= r) revert InvalidCommitment(c);
        }
        uint256 oldRoot = root;
        uint256 x = uint256(keccak256(abi.encodePacked(uint256(start), oldRoot, newRoot, commitments))) % r;
        if (x == 0) revert ZeroChallenge();
        uint256 e = 0;
        for (uint256 j = k; j > 0; j--) {
            e = addmod(mulmod(e, x, r), commitments[j - 1], r);
        }
        insertion.verifyProof(proof, [oldRoot, newRoot, uint256(start), k, x, e]);
        _advance(provider, start, newRoot, commitments);
    }

    /// @dev Make newRoot the root after commitments were inserted at start.
    function _advance(uint32 provider, uint32 start, uint256 newRoot, uint256[] calldata commitments) private {
        if (start > 0) _roots[root].supersededAt = uint64(block.timestamp);
        _roots[newRoot].known = true;
        root = newRoot;
        size = uint32(start + commitments.length);
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
