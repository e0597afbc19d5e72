// Package grafana holds the Grafana dashboard for etcd-backup agents,
// etcd-backup.json (importable into Grafana 10 and 11: a Prometheus
// datasource input and variable, job and instance variables), as a release
// ships it, and its tests (no Go code): the JSON has what Grafana's import
// needs, panels do not overlap, every query uses the datasource variable
// and only defined variables, and promtool parses every PromQL expression.
//
// e2e/monitoring_test.go checks that a running agent exports every
// etcd_backup_* metric the dashboard queries. promtool comes from
// scripts/install-test-deps.sh; without it the tests fail with a hint
// (internal/testenv.Bin), they do not skip.
//
// Imports: none
package grafana
