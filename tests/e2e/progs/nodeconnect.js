// node net.connect to HOST:PORT; prints "connected" or "error CODE" (e.g. "error EACCES").
const net = require('net');
const [host, port] = process.argv.slice(2);
const s = net.connect({ host, port: Number(port) });
s.on('connect', () => { console.log('connected'); s.destroy(); });
s.on('error', (e) => { console.log('error ' + e.code); });
