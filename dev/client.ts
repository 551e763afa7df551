/** `npm run client -- --token T`: see device-cli.ts. */
import { main } from './device-cli.ts';

main('client');
