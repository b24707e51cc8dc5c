package contracts

import (
	"errors"
	"fmt"
	"sync"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/contracts/bindings"
)

// ErrReverted wraps every error decoded from a contract revert.
var ErrReverted = errors.New("contract reverted")

// RevertError is a decoded custom error of a MedRec-ZK contract.
type RevertError struct {
	Name string // the Solidity error name, e.g. "TagInUse"
	Args []any
}

func (e *RevertError) Error() string { return fmt.Sprintf("%s: %s%v", ErrReverted, e.Name, e.Args) }

// Unwrap lets errors.Is(err, ErrReverted) match.
func (e *RevertError) Unwrap() error { return ErrReverted }

var customErrors = sync.OnceValue(func() map[[4]byte]abi.Error {
	m := map[[4]byte]abi.Error{}
	for _, md := range []*bind.MetaData{
		&bindings.AgentRegistryMetaData, &bindings.PatientRegistryMetaData, &bindings.RelationshipsMetaData,
		&bindings.AnchorsMetaData, &bindings.OwnershipVerifierMetaData, &bindings.EntitlementVerifierMetaData,
	} {
		parsed, err := md.ParseABI()
		if err != nil {
			panic(err) // generated ABIs always parse
		}
		for _, e := range parsed.Errors {
			m[[4]byte(e.ID[:4])] = e
		}
	}
	return m
})

// DecodeRevert turns an error from a call, a gas estimate or a transaction into
// a *RevertError when it carries a MedRec-ZK custom error; other errors are
// returned unchanged.
func DecodeRevert(err error) error {
	if err == nil {
		return nil
	}
	data, ok := ethclient.RevertErrorData(err)
	if !ok || len(data) < 4 {
		return err
	}
	e, ok := customErrors()[[4]byte(data[:4])]
	if !ok {
		return fmt.Errorf("%w: unknown error 0x%x: %v", ErrReverted, data[:4], err)
	}
	args, uerr := e.Inputs.Unpack(data[4:])
	if uerr != nil {
		return fmt.Errorf("%w: %s with malformed arguments: %v", ErrReverted, e.Name, uerr)
	}
	return &RevertError{Name: e.Name, Args: args}
}

// RevertName returns the custom error name carried by err, or "".
func RevertName(err error) string {
	var re *RevertError
	if errors.As(DecodeRevert(err), &re) {
		return re.Name
	}
	return ""
}
