"""Everything that speaks Asterisk's languages: AudioSocket, chan_websocket media, AMI."""
