package raft

// StableStore holds the small amount of state Raft must never lose: the current term and the
// vote cast in it. It must be safe for concurrent use; every Set must be durable before it
// returns.
//
// Keys and values passed in are owned by the caller and must be copied if kept; the slice Get
// returns belongs to the caller.
type StableStore interface {
	// Set stores val under key.
	Set(key []byte, val []byte) error

	// Get returns the value stored under key, or (nil, nil) if there is none.
	Get(key []byte) ([]byte, error)

	// SetUint64 stores val under key.
	SetUint64(key []byte, val uint64) error

	// GetUint64 returns the value stored under key, or (0, nil) if there is none.
	GetUint64(key []byte) (uint64, error)
}

// Keys Raft uses in the StableStore.
var (
	keyCurrentTerm = []byte("CurrentTerm")
	// keyLastVote holds the term and candidate of the last vote cast, encoded together so a
	// crash between writing the term and the vote can never leave a vote attributed to the
	// wrong term.
	keyLastVote = []byte("LastVote")
	// keyUnconfirmedSnapshot holds the index and term of a snapshot this node holds that the
	// cluster may not have committed (a Restore, or such a snapshot installed from its
	// leader), empty once it is known committed. See unconfirmedSnapshot.
	keyUnconfirmedSnapshot = []byte("UnconfirmedSnapshot")
	// keyUndoneSnapshot holds the index and term of each stored snapshot that was undone
	// (see recordUndone), 16 bytes each: the node never uses or sends them again.
	keyUndoneSnapshot = []byte("UndoneSnapshot")
)
