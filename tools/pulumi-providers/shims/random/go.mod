// Shim module: its path sits under the Terraform provider's module path (the provider declares
// github.com/terraform-providers/...; go.mod in ../.. replaces it with the hashicorp path), so Go's internal-package
// rule lets it reach the provider constructor in internal/provider. Used by ../../random.
module github.com/terraform-providers/terraform-provider-random/shim

go 1.25.8

require github.com/terraform-providers/terraform-provider-random v1.3.2-0.20260824155315-e1092b0cfc07
