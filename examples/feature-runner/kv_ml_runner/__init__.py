"""The knowledge-verification feature's ML runner: the seed document's Pattern 1 on mlsup."""
