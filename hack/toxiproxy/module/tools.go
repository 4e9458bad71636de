//go:build tools

// Package tools pins the toxiproxy server for hack/toxiproxy/build.sh.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
