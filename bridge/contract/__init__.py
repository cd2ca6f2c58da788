"""The message contract: commands, results, dead letters, their decoding and schema, and
the API's input rules."""
