"""Transformer against recurrent baselines under one budget (`lmcli compare-rnn`)."""
