package api_test

// auditorKey is the credential auditor routes take (the admin token until
// auditor keys exist).
func (l *ledger) auditorKey() string { return adminToken }
