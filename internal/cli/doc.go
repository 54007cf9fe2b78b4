// Package cli implements sagactl, the command-line client of the sagacoord coordinator. The
// binary in cmd/sagactl only calls Run; everything else lives here so that tests can run the
// whole CLI in-process against a fake server.
//
// Input files (saga definitions for `definition apply`, transactions for `tx begin`) are parsed
// by ParseDefinition and ParseTransaction, which report problems as *FileError with the file,
// line and field. Another program can be built on the same global flags, error format and exit
// codes with RunProgram (cmd/sagalab does, for the chaos lab and the benchmark); its commands
// return *ExitError to choose their exit code.
package cli
