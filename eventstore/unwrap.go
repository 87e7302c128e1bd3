package eventstore

// unwrapper is a store that wraps another: the sealed store, the
// instrumented one. Code that needs a particular layer finds it with As,
// whatever wraps it and in which order.
type unwrapper interface{ Unwrap() Store }

// As returns the first store of type T in the chain s, s.Unwrap(), …, so
// that a wrapper added around the log (metrics, say) does not hide what it
// wraps.
func As[T Store](s Store) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		u, ok := s.(unwrapper)
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	var zero T
	return zero, false
}

// KeyringOf returns the keyring of the sealed store in s's chain of
// wrappers: what erasure destroys keys through.
func KeyringOf(s Store) (*Keyring, bool) {
	sealed, ok := As[*Sealed](s)
	if !ok {
		return nil, false
	}
	return sealed.Keys(), true
}
