/** `npm run gateway -- --token T`: see device-cli.ts. */
import { main } from './device-cli.ts';

main('gateway');
