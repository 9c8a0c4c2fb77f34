"""Step 08's Miro board: the REST client (client), what goes on the board (plan), placing it exactly
once (upload) and the per-board record of what was placed (ledger)."""
