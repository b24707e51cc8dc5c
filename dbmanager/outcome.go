package dbmanager

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/ingest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// apiError is an error with an HTTP status and a FHIR issue code.
type apiError struct {
	status int
	code   string // OperationOutcome.issue.code
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errf(fiber.StatusBadRequest, "invalid", format, args...)
}

func unauthorized(format string, args ...any) *apiError {
	return errf(fiber.StatusUnauthorized, "login", format, args...)
}

func forbidden(format string, args ...any) *apiError {
	return errf(fiber.StatusForbidden, "forbidden", format, args...)
}

func notFound(format string, args ...any) *apiError {
	return errf(fiber.StatusNotFound, "not-found", format, args...)
}

// storeError maps a store error to an API error.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("%v", err)
	case errors.Is(err, store.ErrConflict):
		return errf(fiber.StatusConflict, "conflict", "%v", err)
	case errors.Is(err, store.ErrInvalid):
		return badRequest("%v", err)
	case errors.Is(err, ingest.ErrAmbiguous):
		return errf(fiber.StatusPreconditionFailed, "multiple-matches", "%v", err)
	}
	return err
}

type outcomeIssue struct {
	Extension   []gatewayapi.Extension `json:"extension,omitempty"`
	Severity    string                 `json:"severity"`
	Code        string                 `json:"code"`
	Diagnostics string                 `json:"diagnostics"`
}

type operationOutcome struct {
	ResourceType string         `json:"resourceType"`
	Issue        []outcomeIssue `json:"issue"`
}

// errorHandler writes every error as an OperationOutcome, but the OAuth
// endpoints' (smart.go), which are RFC 6749 JSON errors. Internal errors
// are logged by the caller's middleware and answered without detail.
func (g *Gateway) errorHandler(c *fiber.Ctx, err error) error {
	if writeOAuthError(c, err) {
		return nil // the OAuth endpoints answer RFC 6749's errors
	}
	var ae *apiError
	var fe *fiber.Error
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &fe):
		code := "processing"
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			code = "too-costly"
		case fiber.StatusTooManyRequests:
			code = "throttled"
		case fiber.StatusNotFound:
			code = "not-found"
		case fiber.StatusMethodNotAllowed:
			code = "not-supported"
		}
		ae = errf(fe.Code, code, "%s", fe.Message)
	default:
		g.log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
		if ae = storeFault(err); ae == nil {
			ae = errf(fiber.StatusInternalServerError, "exception", "internal error")
		}
	}
	body, _ := json.Marshal(operationOutcome{ResourceType: "OperationOutcome", Issue: []outcomeIssue{{Severity: "error", Code: ae.code, Diagnostics: ae.msg}}})
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Status(ae.status).Send(body)
}
