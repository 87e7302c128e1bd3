package domain

// StreamPrefixes are the prefixes of every stream the ledger writes: each
// area names its streams "<prefix><id>". An EventStoreDB subscription
// filters on them server-side, so an area whose prefix is missing here would
// never reach the projections.
var StreamPrefixes = []string{
	"account-", "email-", "session-", // domain/account
	"enrollment-",        // domain/enrollment
	"vehicle-", "steps-", // domain/vehicle
	"client-", "grant-", "oauth-", // domain/consent
	"auditor-", // domain/audit
}
