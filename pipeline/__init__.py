"""A DVC pipeline from raw MIDI corpora to a trained GRU seq2seq generator, its metrics and samples."""
