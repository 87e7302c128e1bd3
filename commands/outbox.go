package commands

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Message is what the ledger sends a person: an e-mail now, an SMS or a
// code shown in the car later. Code and Link carry the secret the person
// needs; messages are never written to the database or logs.
type Message struct {
	Channel   string    `json:"channel"` // email, sms, vehicle
	To        string    `json:"to"`
	Subject   string    `json:"subject,omitempty"`
	Body      string    `json:"body"`
	Code      string    `json:"code,omitempty"`
	Link      string    `json:"link,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// Account is whom the message is for. It is never sent: outboxes use
	// it to drop the messages of an erased account (Forgetter).
	Account uuid.UUID `json:"-"`
}

// Outbox delivers messages. Commands call Send only after their events are
// committed; Send must not block on delivery (adapters queue and retry), and
// a failure to deliver never undoes the command.
type Outbox interface {
	Send(ctx context.Context, m Message)
}

// DiscardOutbox drops every message.
type DiscardOutbox struct{}

func (DiscardOutbox) Send(context.Context, Message) {}

// MemoryOutbox keeps the last messages in memory for GET /v1/dev/outbox. It
// exists only in dev mode.
type MemoryOutbox struct {
	mu     sync.Mutex
	msgs   []Message
	max    int
	erased erasedAccounts
}

// NewMemoryOutbox keeps at most max messages (oldest dropped first).
func NewMemoryOutbox(max int) *MemoryOutbox { return &MemoryOutbox{max: max} }

func (o *MemoryOutbox) Send(_ context.Context, m Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.erased.has(m.Account) {
		return
	}
	o.msgs = append(o.msgs, m)
	if len(o.msgs) > o.max {
		o.msgs = o.msgs[len(o.msgs)-o.max:]
	}
}

// List returns the messages sent to `to` (all when empty), newest first.
func (o *MemoryOutbox) List(to string) []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []Message{}
	for i := len(o.msgs) - 1; i >= 0; i-- {
		if to == "" || o.msgs[i].To == to {
			out = append(out, o.msgs[i])
		}
	}
	return out
}

// Forgetter is an outbox that keeps messages and can drop those of an
// account that was erased, including any sent after Forget by a command
// that decided before the erasure. Forget must be quick (ledger serve calls
// it under the token model's lock, on every instance) and may be called
// more than once for one account. The erased accounts are remembered for
// the life of the process: erasures are rare, and an id is 16 bytes.
type Forgetter interface {
	Forget(account uuid.UUID)
}

// erasedAccounts is the set of accounts an outbox was told to forget.
type erasedAccounts struct {
	mu  sync.Mutex
	ids map[uuid.UUID]bool
}

func (e *erasedAccounts) add(account uuid.UUID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ids == nil {
		e.ids = map[uuid.UUID]bool{}
	}
	e.ids[account] = true
}

func (e *erasedAccounts) has(account uuid.UUID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ids[account]
}

// Forget drops the account's messages, and any it is sent later. The set
// changes under o.mu, as Send reads it, so that no Send slips in between.
func (o *MemoryOutbox) Forget(account uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.erased.add(account)
	o.msgs = slices.DeleteFunc(o.msgs, func(m Message) bool { return m.Account == account })
}

// Forget forwards to every outbox that keeps messages.
func (os Outboxes) Forget(account uuid.UUID) {
	for _, o := range os {
		if f, ok := o.(Forgetter); ok {
			f.Forget(account)
		}
	}
}

// Outboxes sends every message to each outbox.
type Outboxes []Outbox

func (os Outboxes) Send(ctx context.Context, m Message) {
	for _, o := range os {
		o.Send(ctx, m)
	}
}
