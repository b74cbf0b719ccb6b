//go:build tools

// Package tools pins the docker compose command for `go build github.com/docker/compose/v2/cmd`.
package tools

import _ "github.com/docker/compose/v2/cmd"
