package integration

import (
	"net/url"
	"strings"
)

func bytesCut(kv string) (string, string, bool) { return strings.Cut(kv, "=") }

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }
