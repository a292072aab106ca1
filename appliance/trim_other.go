//go:build !linux

package appliance

// dropStartupPages is Linux only (trim_linux.go).
func dropStartupPages() {}
