package main

import "syscall"

// detachTTY starts the child in a new session, without a controlling
// terminal, so a prompt cannot silently wait for input.
func detachTTY() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
