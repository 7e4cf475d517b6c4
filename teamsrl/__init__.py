"""teamsrl: TeaMs-RL on Ray."""
