// Shim module: its path sits under the Terraform provider's module path, so Go's internal-package
// rule lets it reach the provider constructor in internal/provider. Used by ../../tls.
module github.com/hashicorp/terraform-provider-tls/shim

go 1.25.8

require github.com/hashicorp/terraform-provider-tls v1.2.1-0.20260819085117-d044ca7c6f52
