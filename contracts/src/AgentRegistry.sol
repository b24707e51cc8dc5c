// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title AgentRegistry: the providers of a MedRec-ZK network and their governance.
/// @notice Every provider is a proof-of-authority signer (its `authority`) and runs a
/// gateway (its `gateway` account relays patients' transactions, enrols patients and
/// anchors roots). An active provider proposes adding or removing a provider; active
/// providers vote; a strict majority of the providers active at execution time
/// executes. Authority nodes follow executed votes with clique_propose, so the
/// consensus signer set follows this registry. The registry also records the
/// verifying-key hash of the trusted-setup ceremony and the addresses of the other
/// MedRec-ZK contracts, which are deployed right after it at addresses fixed in advance.
contract AgentRegistry {
    struct Provider {
        address authority;
        address gateway;
        bool active;
        string name;
        string gatewayURL;
    }

    struct InitialProvider {
        address authority;
        address gateway;
        string name;
        string gatewayURL;
    }

    /// @notice The other MedRec-ZK contracts, deployed right after this one.
    struct Links {
        address ownershipVerifier;
        address entitlementVerifier;
        address patientRegistry;
        address relationships;
        address anchors;
    }

    enum Kind {
        None,
        Add,
        Remove
    }

    struct Proposal {
        Kind kind;
        uint32 provider; // Remove: the provider; Add: the id assigned on execution
        uint32 proposer;
        uint64 deadline;
        bool executed;
        address authority; // Add only
        address gateway; // Add only
        string name; // Add only
        string gatewayURL; // Add only
    }

    /// @notice Proposals expire this long after they are made.
    uint64 public constant VOTING_PERIOD = 7 days;

    /// @notice keccak256 of the circuits' verifying-key hashes (prover.KeySet.RegistryHash).
    bytes32 public immutable verifyingKeyHash;
    address public immutable ownershipVerifier;
    address public immutable entitlementVerifier;
    address public immutable patientRegistry;
    address public immutable relationships;
    address public immutable anchors;

    uint32 public providerCount;
    uint32 public activeCount;
    uint256 public proposalCount;

    mapping(uint32 id => Provider) private _providers;
    mapping(address authority => uint32 id) public providerOfAuthority;
    mapping(address gateway => uint32 id) public providerOfGateway;
    mapping(uint256 id => Proposal) private _proposals;
    mapping(uint256 id => uint32[]) private _voters;
    mapping(uint256 id => mapping(uint32 provider => bool)) public hasVoted;

    event ProviderAdded(uint32 indexed id, address authority, address gateway, string name, string gatewayURL);
    event ProviderRemoved(uint32 indexed id, address authority);
    event GatewayChanged(uint32 indexed id, address gateway, string gatewayURL);
    event Proposed(uint256 indexed proposal, uint32 indexed proposer, Kind kind, uint32 provider, address authority);
    event Voted(uint256 indexed proposal, uint32 indexed voter);
    event Executed(uint256 indexed proposal, Kind kind, uint32 provider);

    error NotActiveProvider(address caller);
    error NotAuthority(address caller);
    error UnknownProvider(uint32 id);
    error ProviderInactive(uint32 id);
    error UnknownProposal(uint256 id);
    error ProposalExpired(uint256 id);
    error ProposalExecuted(uint256 id);
    error AlreadyVoted(uint256 id, uint32 voter);
    error NoMajority(uint256 id, uint32 votes, uint32 active);
    error AuthorityTaken(address authority);
    error GatewayTaken(address gateway);
    error ZeroAddress();
    error EmptyName();
    error NoProviders();

    constructor(InitialProvider[] memory initial, bytes32 verifyingKeyHash_, Links memory links) {
        if (initial.length == 0) revert NoProviders();
        for (uint256 i = 0; i < initial.length; i++) {
            _add(initial[i].authority, initial[i].gateway, initial[i].name, initial[i].gatewayURL);
        }
        verifyingKeyHash = verifyingKeyHash_;
        ownershipVerifier = links.ownershipVerifier;
        entitlementVerifier = links.entitlementVerifier;
        patientRegistry = links.patientRegistry;
        relationships = links.relationships;
        anchors = links.anchors;
    }

    // --- views ---------------------------------------------------------------

    /// @notice The provider with this id (ids start at 1).
    function provider(uint32 id) external view returns (Provider memory) {
        if (id == 0 || id > providerCount) revert UnknownProvider(id);
        return _providers[id];
    }

    /// @notice The id of the active provider whose gateway is `account`, or 0.
    function activeGateway(address account) external view returns (uint32 id) {
        id = providerOfGateway[account];
        if (id != 0 && !_providers[id].active) id = 0;
    }

    /// @notice Whether provider `id` is active, and its gateway.
    function gatewayOf(uint32 id) external view returns (bool active, address gateway) {
        Provider storage p = _providers[id];
        return (p.active, p.gateway);
    }

    /// @notice The active providers' ids, ascending.
    function activeProviders() external view returns (uint32[] memory ids) {
        ids = new uint32[](activeCount);
        uint256 n;
        for (uint32 id = 1; id <= providerCount; id++) {
            if (_providers[id].active) ids[n++] = id;
        }
    }

    /// @notice The authorities of the active providers: the signer set consensus must follow.
    function signers() external view returns (address[] memory out) {
        out = new address[](activeCount);
        uint256 n;
        for (uint32 id = 1; id <= providerCount; id++) {
            if (_providers[id].active) out[n++] = _providers[id].authority;
        }
    }

    function proposal(uint256 id) external view returns (Proposal memory) {
        if (id == 0 || id > proposalCount) revert UnknownProposal(id);
        return _proposals[id];
    }

    /// @notice How many providers active now have voted for proposal `id`.
    function votes(uint256 id) public view returns (uint32 n) {
        uint32[] storage v = _voters[id];
        for (uint256 i = 0; i < v.length; i++) {
            if (_providers[v[i]].active) n++;
        }
    }

    // --- governance -----------------------------------------------------------

    /// @notice Propose adding a provider. The proposer's vote is counted.
    function proposeAdd(address authority, address gateway, string calldata name, string calldata gatewayURL)
        external
        returns (uint256 id)
    {
        uint32 proposer = _callerProvider();
        _checkNew(authority, gateway, name);
        id = ++proposalCount;
        Proposal storage p = _proposals[id];
        p.kind = Kind.Add;
        p.proposer = proposer;
        p.deadline = uint64(block.timestamp) + VOTING_PERIOD;
        p.authority = authority;
        p.gateway = gateway;
        p.name = name;
        p.gatewayURL = gatewayURL;
        emit Proposed(id, proposer, Kind.Add, 0, authority);
        _vote(id, proposer);
    }

    /// @notice Propose removing an active provider. The proposer's vote is counted.
    function proposeRemove(uint32 target) external returns (uint256 id) {
        uint32 proposer = _callerProvider();
        if (target == 0 || target > providerCount) revert UnknownProvider(target);
        if (!_providers[target].active) revert ProviderInactive(target);
        if (activeCount == 1) revert NoProviders();
        id = ++proposalCount;
        Proposal storage p = _proposals[id];
        p.kind = Kind.Remove;
        p.provider = target;
        p.proposer = proposer;
        p.deadline = uint64(block.timestamp) + VOTING_PERIOD;
        emit Proposed(id, proposer, Kind.Remove, target, _providers[target].authority);
        _vote(id, proposer);
    }

    /// @notice Vote for a proposal; it executes as soon as a strict majority of the
    /// active providers has voted for it.
    function vote(uint256 id) external {
        _vote(id, _callerProvider());
    }

    /// @notice Execute a proposal that has a strict majority (useful after the active
    /// set shrank). Anyone may call it.
    function execute(uint256 id) external {
        Proposal storage p = _open(id);
        uint32 n = votes(id);
        if (uint256(n) * 2 <= activeCount) revert NoMajority(id, n, activeCount);
        _execute(id, p);
    }

    /// @notice A provider's authority moves its gateway account or URL. The new
    /// gateway obeys the registration rules: not zero, no other provider's
    /// gateway, and no authority at all (its own included).
    function setGateway(address gateway, string calldata gatewayURL) external {
        uint32 id = providerOfAuthority[msg.sender];
        if (id == 0) revert NotAuthority(msg.sender);
        if (!_providers[id].active) revert ProviderInactive(id);
        _checkGateway(gateway, id);
        Provider storage p = _providers[id];
        delete providerOfGateway[p.gateway];
        p.gateway = gateway;
        p.gatewayURL = gatewayURL;
        providerOfGateway[gateway] = id;
        emit GatewayChanged(id, gateway, gatewayURL);
    }

    // --- internals -------------------------------------------------------------

    function _callerProvider() private view returns (uint32 id) {
        id = providerOfAuthority[msg.sender];
        if (id == 0) id = providerOfGateway[msg.sender];
        if (id == 0 || !_providers[id].active) revert NotActiveProvider(msg.sender);
    }

    function _checkNew(address authority, address gateway, string calldata name) private view {
        if (bytes(name).length == 0) revert EmptyName();
        _checkPair(authority, gateway);
    }

    /// @dev The registration rules for a new provider's addresses. An address is
    /// never both an authority and a gateway, not even one provider's: the
    /// gateway's key is online and relays, the authority's seals blocks and
    /// governs, and the audit tells relays from governance by the sender.
    function _checkPair(address authority, address gateway) private view {
        if (authority == address(0)) revert ZeroAddress();
        if (providerOfAuthority[authority] != 0 || providerOfGateway[authority] != 0) revert AuthorityTaken(authority);
        if (gateway == authority) revert GatewayTaken(gateway);
        _checkGateway(gateway, 0);
    }

    /// @dev The rules for a gateway of provider `self` (0: a provider not yet
    /// registered): not zero, no authority, no other provider's gateway.
    function _checkGateway(address gateway, uint32 self) private view {
        if (gateway == address(0)) revert ZeroAddress();
        uint32 holder = providerOfGateway[gateway];
        if ((holder != 0 && holder != self) || providerOfAuthority[gateway] != 0) revert GatewayTaken(gateway);
    }

    function _open(uint256 id) private view returns (Proposal storage p) {
        if (id == 0 || id > proposalCount) revert UnknownProposal(id);
        p = _proposals[id];
        if (p.executed) revert ProposalExecuted(id);
        if (block.timestamp > p.deadline) revert ProposalExpired(id);
    }

    function _vote(uint256 id, uint32 voter) private {
        Proposal storage p = _open(id);
        if (hasVoted[id][voter]) revert AlreadyVoted(id, voter);
        hasVoted[id][voter] = true;
        _voters[id].push(voter);
        emit Voted(id, voter);
        if (uint256(votes(id)) * 2 > activeCount) _execute(id, p);
    }

    function _execute(uint256 id, Proposal storage p) private {
        p.executed = true;
        if (p.kind == Kind.Add) {
            // The addresses may have been taken since the proposal was made: _add checks again.
            p.provider = _add(p.authority, p.gateway, p.name, p.gatewayURL);
        } else {
            Provider storage target = _providers[p.provider];
            if (!target.active) revert ProviderInactive(p.provider);
            if (activeCount == 1) revert NoProviders();
            target.active = false;
            activeCount--;
            delete providerOfAuthority[target.authority];
            delete providerOfGateway[target.gateway];
            emit ProviderRemoved(p.provider, target.authority);
        }
        emit Executed(id, p.kind, p.provider);
    }

    function _add(address authority, address gateway, string memory name, string memory gatewayURL)
        private
        returns (uint32 id)
    {
        if (bytes(name).length == 0) revert EmptyName();
        _checkPair(authority, gateway);
        id = ++providerCount;
        _providers[id] = Provider(authority, gateway, true, name, gatewayURL);
        providerOfAuthority[authority] = id;
        providerOfGateway[gateway] = id;
        activeCount++;
        emit ProviderAdded(id, authority, gateway, name, gatewayURL);
    }
}
