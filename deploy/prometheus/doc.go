// Package prometheus holds the Prometheus alerting rules for etcd-backup
// agents, etcd-backup-rules.yml, as a release ships them, and their tests
// (no Go code): promtool checks the file and runs its unit tests
// (etcd-backup-rules_test.yml, synthetic series for every alert: it fires
// when it should and stays quiet when it should not), every alert carries a
// severity, a summary, a description and a runbook_url whose anchor exists
// in docs/, and every alert's expression matters to its unit tests (an
// expression that never or always fires makes them fail).
//
// e2e/monitoring_test.go checks that a running agent exports every
// etcd_backup_* metric the rules use. promtool comes from
// scripts/install-test-deps.sh; without it the tests fail with a hint
// (internal/testenv.Bin), they do not skip.
//
// Imports: none
package prometheus
