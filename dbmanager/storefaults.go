package dbmanager

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// storeFault answers a request the records database could not take: 503
// while it is unreachable or restarting (nothing was done, nothing served:
// try again), 507 when its storage is full (the write was refused whole,
// what is stored is intact). nil for any other error.
func storeFault(err error) *apiError {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return errf(fiber.StatusServiceUnavailable, "transient", "the records database is unavailable; nothing was done, try again")
	case errors.Is(err, store.ErrFull):
		return errf(fiber.StatusInsufficientStorage, "exception", "the records database is full: the request was refused and nothing was written")
	}
	return nil
}
