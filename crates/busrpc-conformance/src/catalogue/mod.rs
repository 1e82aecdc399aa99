//! Data the cases check against: the hostile-input catalogue, which is a
//! list of messages and their exact answers, kept whole.

pub mod hostile;
