ALTER TABLE sagas RESET (fillfactor);
ALTER TABLE transactions RESET (fillfactor);
