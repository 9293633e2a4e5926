"""What scores a trained model: the importance-sampled scores and AIS, the protocol of the test
numbers, summary.json, pictures, and the comparison of runs beside the papers' numbers."""
