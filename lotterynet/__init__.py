"""lotterynet: training by pruning over frozen random weights."""
