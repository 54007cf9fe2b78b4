//go:build testhooks

package main

// wantTestHooks: a build with -tags testhooks has the test-hook flags.
const wantTestHooks = true
