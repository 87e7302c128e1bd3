package projections

// SetRebuildBatch makes the rebuild's batches n events long until the
// returned function restores them.
func SetRebuildBatch(n int) (restore func()) {
	old := rebuildBatch
	rebuildBatch = n
	return func() { rebuildBatch = old }
}
