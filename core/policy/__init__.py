"""Training the policy: the loop the online methods share and the ending every method shares."""
