"""What every face needs from the ring and the writer process: room in the ring,
the flushed-position wait, durability, and the spin credit."""
