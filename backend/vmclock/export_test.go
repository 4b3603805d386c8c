package vmclock

// SeqWait is seqWait, for the external tests.
const SeqWait = seqWait
