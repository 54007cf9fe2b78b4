//go:build !testhooks

package main

// wantTestHooks: a build without -tags testhooks has no test-hook flags.
const wantTestHooks = false
